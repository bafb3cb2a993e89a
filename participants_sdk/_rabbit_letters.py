"""The copies a consumer publishes of a delivery (a dead letter, a retry), checked before sending.

A delivery's headers are whatever its sender wrote, as pamqp decoded them, and not all of that
can be sent again: a long string that is not UTF-8 comes back as `bytes`, which pamqp refuses to
encode (TypeError); a double is encoded again as a 32-bit float (OverflowError past 3.4e38, and
precision lost below); tables nested a few hundred deep exceed the recursion limit. And the
content header of a copy must fit in one frame (`frame_max`, 128 KiB on RabbitMQ by default):
a larger one makes the broker close the publishing connection, and the delivery comes back to
fail the same way. So a copy's properties are encoded here first and held to a budget.

A dead letter that does not pass is sent minimal: the same body and properties, Sagawire's
dead-letter headers, the original headers that encode on their own and fit (Sagawire's own
first, then the smallest), and `x-sagawire-dead-letter-dropped-headers` naming those left out.
If not even that can be encoded, `Unsendable` tells the consumer to reject the delivery instead.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from pamqp import encode

from participants_sdk import amqp, protocol
from participants_sdk.headers import MAX_REASON_BYTES, bounded

PROPERTIES_BUDGET: Final = 64 * 1024
"""Most bytes the encoded properties of a copy may take: half of RabbitMQ's default frame_max
(131072), since a content header is never split across frames. The other half is left for what
the broker adds to the copy later (`x-death` when its DLQ or delay queue dead-letters it,
`x-delivery-count`), which must fit in the same frame when it is delivered."""
_HEADER_FRAME_FIXED: Final = 12  # class id, weight and body size come before the properties
MAX_ORIGIN_BYTES: Final = 255
"""An exchange name or routing key is a shortstr: anything longer was never a real one."""
MAX_ERROR_BYTES: Final = 200
"""pamqp's encode errors quote the whole value: only this much of one goes into a log line."""
_OURS: Final = ("x-sagawire-", protocol.H_TRACEPARENT)


class Unsendable(ValueError):
    """A copy whose properties cannot be encoded, or not within the budget."""


@dataclasses.dataclass(frozen=True, slots=True)
class Letter:
    message: protocol.WireMessage
    dropped: tuple[str, ...] = ()
    """Names of the original headers left out (a minimal letter)."""
    why: str | None = None
    """Why the full letter could not be sent (a minimal letter)."""


def budget(max_content_size: object) -> int:
    """The budget for a copy on a connection whose frames carry `max_content_size` bytes of
    payload (aiormq's channel attribute; anything else: `PROPERTIES_BUDGET`)."""
    if isinstance(max_content_size, int) and max_content_size > 0:
        return min(PROPERTIES_BUDGET, (max_content_size - _HEADER_FRAME_FIXED) // 2)
    return PROPERTIES_BUDGET


def short(exc: BaseException) -> str:
    """An exception as a bounded line for a log or a reason."""
    return bounded(f"{type(exc).__name__}: {exc}", MAX_ERROR_BYTES)


def _encoded_size(message: protocol.WireMessage) -> int:
    try:
        return len(amqp.amqp_properties(message).marshal())
    except Exception as exc:  # noqa: BLE001 - TypeError, OverflowError, RecursionError...
        raise Unsendable(f"its properties cannot be encoded again ({short(exc)})") from None


def check(message: protocol.WireMessage, limit: int) -> None:
    """Raise `Unsendable` unless `message`'s properties encode within `limit` bytes."""
    size = _encoded_size(message)
    if size > limit:
        raise Unsendable(f"its properties take {size} bytes encoded, over the {limit} allowed")


def check_retry(message: protocol.WireMessage, limit: int) -> None:
    """`check` for a retry copy, with the headers `publish_later` adds to it."""
    check(
        message.with_headers(
            **{
                amqp.H_DELAYED_EXCHANGE: message.exchange,
                amqp.H_DELAYED_ROUTING_KEY: message.routing_key,
            }
        ),
        limit,
    )


def dead_letter(message: protocol.WireMessage, reason: str, queue: str, limit: int) -> Letter:
    """The dead letter of `message` from `queue`: full if it can be sent, else minimal.

    `Unsendable` when not even the minimal one can be (its other properties cannot be encoded).
    """
    ours = {
        protocol.H_DEAD_LETTER_REASON: bounded(reason),
        protocol.H_DEAD_LETTER_QUEUE: queue,
        protocol.H_ORIGINAL_EXCHANGE: bounded(message.exchange, MAX_ORIGIN_BYTES),
        protocol.H_ORIGINAL_ROUTING_KEY: bounded(message.routing_key, MAX_ORIGIN_BYTES),
    }
    full = message.with_headers(**ours)
    try:
        check(full, limit)
    except Unsendable as exc:
        return _minimal(message, ours, limit, str(exc))
    return Letter(full)


def _minimal(message: protocol.WireMessage, ours: dict[str, str], limit: int, why: str) -> Letter:
    room_for_names = "x" * MAX_REASON_BYTES  # the longest list of dropped names there can be
    base = dataclasses.replace(
        message, headers={**ours, protocol.H_DEAD_LETTER_DROPPED_HEADERS: room_for_names}
    )
    room = limit - _encoded_size(base)
    dropped: list[str] = []
    candidates: list[tuple[bool, int, str]] = []
    for name, value in message.headers.items():
        if name in ours:
            continue
        size = _entry_size(name, value)
        if size is None:
            dropped.append(name)
        else:
            candidates.append((not name.startswith(_OURS), size, name))
    kept: dict[str, object] = {}
    for _, size, name in sorted(candidates):
        if size <= room:
            kept[name] = message.headers[name]
            room -= size
        else:
            dropped.append(name)
    headers = {**kept, **ours}
    names = tuple(sorted(dropped))
    if names:
        headers[protocol.H_DEAD_LETTER_DROPPED_HEADERS] = bounded(", ".join(names))
    letter = dataclasses.replace(message, headers=headers)
    check(letter, limit)
    return Letter(letter, names, why)


def _entry_size(name: str, value: object) -> int | None:
    """The bytes one header takes in an encoded table; None when it cannot be encoded."""
    try:
        return len(encode.field_table({name: value})) - 4  # type: ignore[dict-item]
    except Exception:  # noqa: BLE001 - TypeError, OverflowError, RecursionError...
        return None
