"""How a `WireMessage` travels as an AMQP message, and what RabbitMQ's errors mean.

Shared by the SDK's `RabbitBroker` and the orchestrator's dead-letter tools, so that both read
and write a message the same way: its properties, the headers the broker adds (`x-death` read as
Sagawire's dead-letter headers), publishing persistent and mandatory, and errors that name the
action refused with any password redacted.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Mapping
from typing import Any, Final

import aio_pika
import aiormq.abc
import aiormq.exceptions
from pamqp.commands import Basic

from participants_sdk import protocol
from participants_sdk._rabbit_frames import unreadable
from participants_sdk.errors import AccessRefused, BrokerError, BrokerUnreachable
from participants_sdk.redaction import redact

PERSISTENT: Final = 2
"""AMQP delivery mode 2: the broker keeps the message on disk."""

# Where a retried message was first published: a delay queue sends it back through the default
# exchange, and the consumer restores these as the message's exchange and routing key.
H_DELAYED_EXCHANGE: Final = "x-sagawire-delayed-exchange"
H_DELAYED_ROUTING_KEY: Final = "x-sagawire-delayed-routing-key"

# Headers the broker adds; a delivery reports them apart from the message's own headers.
BROKER_HEADERS: Final = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
_PRIVATE_HEADERS: Final = frozenset({H_DELAYED_EXCHANGE, H_DELAYED_ROUTING_KEY})

# RabbitMQ's x-death reasons, as a Sagawire dead-letter reason.
_DEATH_REASONS: Final = {
    "delivery_limit": protocol.DELIVERY_LIMIT_REASON,
    "rejected": "rejected without requeue",
    "expired": "expired",
    "maxlen": "queue length limit",
}


AMQP_ERRORS: Final = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)
"""What a call on a channel raises when the channel or its connection is gone."""


def split_headers(
    raw: Mapping[str, Any], queue: str
) -> tuple[dict[str, Any], dict[str, Any], tuple[str, str] | None]:
    """The message's own headers, the broker's headers, and where a retried message came from.

    A message the broker dead-lettered (a quorum queue's delivery limit) carries `x-death`
    instead of Sagawire's dead-letter headers; read from a DLQ it gets them from `x-death`, so
    a DLQ reads the same whoever moved the message there.
    """
    own = {k: v for k, v in raw.items() if k not in BROKER_HEADERS and k not in _PRIVATE_HEADERS}
    broker = {k: v for k, v in raw.items() if k in BROKER_HEADERS}
    origin = None
    if H_DELAYED_EXCHANGE in raw and H_DELAYED_ROUTING_KEY in raw:
        origin = (_text(raw[H_DELAYED_EXCHANGE]), _text(raw[H_DELAYED_ROUTING_KEY]))
    deaths = broker.get("x-death")
    why = unreadable(own)
    if queue.endswith(".dlq") and why is not None and protocol.H_DEAD_LETTER_REASON not in own:
        # Its properties were lost in decoding, `x-death` with them: a consumer rejected it.
        own[protocol.H_DEAD_LETTER_REASON] = f"properties unreadable: {why}"
        own[protocol.H_DEAD_LETTER_QUEUE] = queue.removesuffix(".dlq")
    elif (
        queue.endswith(".dlq")
        and protocol.H_DEAD_LETTER_REASON not in own
        and isinstance(deaths, list)
        and deaths
        and isinstance(deaths[0], dict)
    ):
        death: dict[str, Any] = deaths[0]  # the most recent one comes first
        reason = _text(death.get("reason", ""))
        keys = death.get("routing-keys") or [""]
        exchange, routing_key = origin or (_text(death.get("exchange", "")), _text(keys[0]))
        own[protocol.H_DEAD_LETTER_REASON] = _DEATH_REASONS.get(reason, reason)
        own[protocol.H_DEAD_LETTER_QUEUE] = _text(death.get("queue", ""))
        own[protocol.H_ORIGINAL_EXCHANGE] = exchange
        own[protocol.H_ORIGINAL_ROUTING_KEY] = routing_key
    return own, broker, origin


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def unreachable(redacted_url: str, exc: BaseException) -> BrokerUnreachable:
    return BrokerUnreachable(
        f"cannot connect to RabbitMQ at {redacted_url}: {_describe_failure(exc)}; "
        "is it running? see `make services`"
    )


def _describe_failure(exc: BaseException) -> str:
    """A short reason for a failed connection, with any URL in it redacted."""
    if _refused(exc):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(
        exc,
        aiormq.exceptions.AuthenticationError | aiormq.exceptions.ProbableAuthenticationError,
    ):
        return "login refused (check the user, password and virtual host)"
    text = redact(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _refused(exc: BaseException | None) -> bool:
    """aiormq reports a refused connection as an AMQPConnectionError carrying the errno."""
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError) or (
            exc.args and exc.args[0] == errno.ECONNREFUSED
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def refused(action: str, exc: BaseException) -> AccessRefused:
    """An `AccessRefused` for a channel call the broker refused for lack of permission."""
    return AccessRefused(
        f"this RabbitMQ user may not {action}: {redact(str(exc))}; "
        "see `sagawire topology permissions`"
    )


def broker_error(action: str, exc: BaseException) -> BrokerError:
    """A `BrokerError` for a failed channel call, with the AMQP reason when there is one."""
    reason = redact(str(exc)) or type(exc).__name__
    return BrokerError(f"{action}: {reason}")


async def close_quietly(channel: aio_pika.abc.AbstractChannel) -> None:
    if not channel.is_closed:
        with contextlib.suppress(*AMQP_ERRORS):
            await channel.close()


async def publish(
    channel: aiormq.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    message: protocol.WireMessage,
) -> None:
    """Publish persistent and mandatory on `channel`; with confirms, return once confirmed.

    Straight on aiormq's channel: aio-pika's `Message` would be built for each publish only to
    be turned into these properties.
    """
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    await channel.basic_publish(
        message.body,
        exchange=exchange,
        routing_key=routing_key,
        properties=amqp_properties(message),
        mandatory=True,
    )


def amqp_properties(message: protocol.WireMessage) -> Basic.Properties:
    """The AMQP properties `publish` sends for `message` (encoded only when sent)."""
    return Basic.Properties(
        headers=message.headers,
        content_type=message.content_type or None,
        content_encoding=message.content_encoding or None,
        delivery_mode=PERSISTENT,
        message_id=message.message_id or None,
        correlation_id=message.correlation_id,
        message_type=message.type or None,
    )


def from_amqp(
    properties: Basic.Properties,
    body: bytes,
    *,
    exchange: str | None,
    routing_key: str | None,
    queue: str,
) -> tuple[protocol.WireMessage, dict[str, Any]]:
    """A message delivered from `queue` as Sagawire sees it, and the headers the broker added.

    `exchange` and `routing_key` are the delivery's: where a retried or dead-lettered message
    was first sent is read from its headers instead.
    """
    headers, broker_headers, origin = split_headers(dict(properties.headers or {}), queue)
    exchange, routing_key = origin or (exchange or "", routing_key or "")
    message = protocol.WireMessage(
        message_id=properties.message_id or "",
        type=properties.message_type or "",
        body=body,
        correlation_id=properties.correlation_id,
        headers=headers,
        content_type=properties.content_type or "",
        content_encoding=properties.content_encoding or "",
        exchange=exchange,
        routing_key=routing_key,
    )
    return message, broker_headers
