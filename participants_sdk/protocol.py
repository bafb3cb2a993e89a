"""The wire contract between the orchestrator and participant services.

Everything a service written in any language needs to take part lives here: exchange and queue
names, header names, and the envelope. The orchestrator imports these names from this module; the
README's "Wire protocol" section describes the same thing in prose.

Topology::

    sagawire.commands  (topic)   routing key <service>.<command>  -> sagawire.<service>.commands
    sagawire.replies   (direct)  routing key <service>            -> sagawire.<service>.replies
    sagawire.control   (direct)  routing key control              -> sagawire.control
    sagawire.dlx       (direct)  routing key <queue name>         -> <queue name>.dlq
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import uuid
from typing import Any, Final

from participants_sdk import headers as _headers

COMMANDS_EXCHANGE: Final = "sagawire.commands"
REPLIES_EXCHANGE: Final = "sagawire.replies"
CONTROL_EXCHANGE: Final = "sagawire.control"
DEAD_LETTER_EXCHANGE: Final = "sagawire.dlx"

CONTROL_QUEUE: Final = "sagawire.control"
CONTROL_ROUTING_KEY: Final = "control"

CONTENT_TYPE_JSON: Final = _headers.JSON_MEDIA_TYPE

# Headers carried by commands and replies.
H_MACHINE: Final = "x-sagawire-machine"
H_VERSION: Final = "x-sagawire-version"
H_STEP: Final = "x-sagawire-step"
H_VISIT: Final = "x-sagawire-visit"
H_ATTEMPT: Final = "x-sagawire-attempt"
H_IDEMPOTENCY_KEY: Final = "x-sagawire-idempotency-key"
H_SERVICE: Final = "x-sagawire-service"
H_TRACEPARENT: Final = "traceparent"
# Set by a participant on a reply produced by `Reject`: the step failed for a business reason.
H_REJECTED: Final = "x-sagawire-rejected"
# On a compensation command: the idempotency key of the step it undoes.
H_COMPENSATES: Final = "x-sagawire-compensates"
# How many times a participant has retried this command after an unexpected error.
H_RETRIES: Final = "x-sagawire-retries"
# Added when a message is dead-lettered by Sagawire (not by the broker).
H_DEAD_LETTER_REASON: Final = "x-sagawire-dead-letter-reason"
H_DEAD_LETTER_QUEUE: Final = "x-sagawire-dead-letter-queue"
H_ORIGINAL_EXCHANGE: Final = "x-sagawire-original-exchange"
H_ORIGINAL_ROUTING_KEY: Final = "x-sagawire-original-routing-key"
# On a dead letter whose headers could not all be sent again: the names of those left out.
H_DEAD_LETTER_DROPPED_HEADERS: Final = "x-sagawire-dead-letter-dropped-headers"
# Stands for a delivery's properties that could not be decoded (the only header it then has).
H_UNREADABLE_PROPERTIES: Final = "x-sagawire-unreadable-properties"
H_REPLAY_COUNT: Final = "x-sagawire-replay-count"

REPLY_COPIES: Final = (
    H_MACHINE,
    H_VERSION,
    H_STEP,
    H_VISIT,
    H_ATTEMPT,
    H_IDEMPOTENCY_KEY,
    H_TRACEPARENT,
)
"""The headers a reply copies from its command, those the command has."""

DELIVERY_LIMIT_REASON: Final = "delivery limit exceeded"
"""The dead-letter reason of a message delivered more often than the queue's delivery limit."""

# A body larger than this is dead-lettered unread.
MAX_BODY_BYTES: Final = 256 * 1024


def command_queue(service: str) -> str:
    """The queue a participant consumes its commands from."""
    return f"sagawire.{service}.commands"


def reply_queue(service: str) -> str:
    """The queue the orchestrator consumes one service's replies from."""
    return f"sagawire.{service}.replies"


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


def command_routing_key(service: str, command: str) -> str:
    return f"{service}.{command}"


def command_binding(service: str) -> str:
    return f"{service}.*"


def idempotency_key(saga_id: str, step: str, visit: int) -> str:
    """Stable across attempts of one visit of a step, new on every visit."""
    return f"{saga_id}:{step}:{visit}"


def new_message_id() -> str:
    return uuid.uuid4().hex


@dataclasses.dataclass(frozen=True, slots=True)
class WireMessage:
    """One AMQP message as Sagawire sees it: properties, headers and a JSON body."""

    message_id: str
    type: str
    body: bytes
    correlation_id: str | None = None
    headers: dict[str, Any] = dataclasses.field(default_factory=dict)
    content_type: str = CONTENT_TYPE_JSON
    exchange: str = ""
    routing_key: str = ""
    content_encoding: str = ""

    @classmethod
    def json(
        cls,
        *,
        type: str,  # noqa: A002 - `type` is the AMQP property's name
        payload: dict[str, Any],
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> WireMessage:
        return cls(
            message_id=message_id or new_message_id(),
            type=type,
            body=encode_json(payload),
            correlation_id=correlation_id,
            headers=dict(headers or {}),
        )

    def header_str(self, name: str) -> str | None:
        """The header as text; `HeaderError` when it is not (see `participants_sdk.headers`)."""
        return _headers.get_text(self.headers, name)

    def header_int(self, name: str) -> int | None:
        """The header as an integer; `HeaderError` when it is not one."""
        return _headers.get_int(self.headers, name)

    def header_bool(self, name: str, *, default: bool = False) -> bool:
        """The header as a boolean; `HeaderError` when it is not one."""
        return _headers.get_bool(self.headers, name, default=default)

    def header_display(self, name: str) -> str | None:
        """The header as text for people, whatever its type: never raises."""
        value = self.headers.get(name)
        return None if value is None else _headers.display(value)

    def with_headers(self, **changes: Any) -> WireMessage:  # noqa: ANN401 - header values are any AMQP field
        return dataclasses.replace(self, headers={**self.headers, **changes})

    def routed(self, exchange: str, routing_key: str) -> WireMessage:
        return dataclasses.replace(self, exchange=exchange, routing_key=routing_key)


class BodyError(ValueError):
    """A message body that is not a JSON object within the size limit."""


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(
        payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    ).encode()


def _no_constants(name: str) -> object:
    raise BodyError(f"body is not valid JSON: {name} is not a JSON number")


def decode_json_object(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Decode a message body that must be a JSON object, with a reason when it is not."""
    if len(body) > max_bytes:
        raise BodyError(f"body of {len(body)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise BodyError("body is JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise BodyError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(value, dict):
        raise BodyError(f"body must be a JSON object, got {type(value).__name__}")
    return value
