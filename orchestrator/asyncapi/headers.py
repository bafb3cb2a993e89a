"""The AMQP headers of commands and replies as JSON Schemas, with the types the README gives them.

Header values are read by one rule set (`participants_sdk.headers`): an integer header may also
arrive as a decimal string, a boolean as 0, 1 or the strings `true` and `false`. The schemas say
what Sagawire sends; the descriptions say what it accepts besides.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from orchestrator.asyncapi.schemas import Schema
from participants_sdk import protocol

HeaderKind = Literal["text", "integer", "boolean"]
Presence = Literal["always", "sometimes", "never"]

_ACCEPTED: Final[dict[HeaderKind, tuple[Schema, str]]] = {
    "text": ({"type": "string"}, ""),
    "integer": ({"type": "integer"}, " An integer; a plain decimal string is accepted too."),
    "boolean": (
        {"type": "boolean"},
        " A boolean; 0, 1 and the strings `true` and `false` are accepted too.",
    ),
}

HEADERS: Final[dict[str, tuple[HeaderKind, str]]] = {
    protocol.H_MACHINE: ("text", "The machine the saga runs."),
    protocol.H_VERSION: ("integer", "The version of that machine the saga runs."),
    protocol.H_STEP: (
        "text",
        "The step: its state, `state.branch` in a parallel state, or `compensate:<step>`.",
    ),
    protocol.H_VISIT: ("integer", "Which entry into the step's state this is, from 1."),
    protocol.H_ATTEMPT: ("integer", "Which sending of the command in this visit, from 1."),
    protocol.H_IDEMPOTENCY_KEY: (
        "text",
        "`saga_id:step:visit`: the same for every attempt of a visit. Apply each key once.",
    ),
    protocol.H_SERVICE: ("text", "The participant service."),
    protocol.H_COMPENSATES: (
        "text",
        "On a compensation: the idempotency key of the step it undoes.",
    ),
    protocol.H_RETRIES: (
        "integer",
        (
            "How often the participant has retried this command after an unexpected error; "
            "set by the participant on the copies it sends itself again."
        ),
    ),
    protocol.H_REJECTED: ("boolean", "`true` for a business failure: the step did nothing."),
    protocol.H_TRACEPARENT: (
        "text",
        (
            "W3C trace context (`00-<32 hex>-<16 hex>-<2 hex>`) of a saga started with one: on "
            "every command of the saga; a participant copies it onto its reply."
        ),
    ),
}

_IDENTITY: Final = (
    protocol.H_MACHINE,
    protocol.H_VERSION,
    protocol.H_STEP,
    protocol.H_VISIT,
    protocol.H_ATTEMPT,
    protocol.H_IDEMPOTENCY_KEY,
    protocol.H_SERVICE,
)
"""Sent on every command; a reply copies them, with its own service."""

_REPLY_REQUIRED: Final = (
    protocol.H_MACHINE,
    protocol.H_STEP,
    protocol.H_VISIT,
    protocol.H_ATTEMPT,
    protocol.H_SERVICE,
)
"""What the orchestrator needs on a reply; the version and idempotency key are copied when the
command has them."""


def _header(name: str, **narrowed: object) -> Schema:
    kind, meaning = HEADERS[name]
    schema, accepted = _ACCEPTED[kind]
    return {**schema, **narrowed, "description": meaning + accepted}


def _object(properties: dict[str, Schema], required: Iterable[str]) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    needed = set(required)
    if needed:
        schema["required"] = [name for name in properties if name in needed]
    schema["additionalProperties"] = True  # other headers are allowed, and ignored
    return schema


def command_headers(
    service: str, machines: Iterable[str], steps: Iterable[str], *, compensation: Presence
) -> Schema:
    """The headers of a command; `compensation` says whether it is sent as a compensation."""
    properties = {
        **_identity(service, machines, steps),
        protocol.H_RETRIES: _header(protocol.H_RETRIES, minimum=0),
        protocol.H_TRACEPARENT: _header(protocol.H_TRACEPARENT),
    }
    required = list(_IDENTITY)
    if compensation != "never":
        properties[protocol.H_COMPENSATES] = _header(protocol.H_COMPENSATES)
    if compensation == "always":
        required.append(protocol.H_COMPENSATES)
    return _object(properties, required)


def reply_headers(
    service: str, machines: Iterable[str], steps: Iterable[str], *, rejected: bool | None
) -> Schema:
    """The headers of a reply: those of its command, with the service and whether it was
    rejected (`rejected` True or False when known, None when it may be either)."""
    properties = {
        **_identity(service, machines, steps),
        protocol.H_TRACEPARENT: _header(protocol.H_TRACEPARENT),
    }
    required = list(_REPLY_REQUIRED)
    if rejected is None:
        properties[protocol.H_REJECTED] = _header(protocol.H_REJECTED)
    else:
        properties[protocol.H_REJECTED] = _header(protocol.H_REJECTED, const=rejected)
        if rejected:
            required.append(protocol.H_REJECTED)
    return _object(properties, required)


def start_headers() -> Schema:
    """The headers of a start request: only the trace context the saga then carries."""
    return _object({protocol.H_TRACEPARENT: _header(protocol.H_TRACEPARENT)}, ())


def _identity(service: str, machines: Iterable[str], steps: Iterable[str]) -> dict[str, Schema]:
    narrowed: dict[str, dict[str, object]] = {
        protocol.H_MACHINE: {"enum": sorted(set(machines))},
        protocol.H_VERSION: {"minimum": 1},
        protocol.H_STEP: {"enum": sorted(set(steps))},
        protocol.H_VISIT: {"minimum": 1},
        protocol.H_ATTEMPT: {"minimum": 1},
        protocol.H_SERVICE: {"const": service},
    }
    return {name: _header(name, **narrowed.get(name, {})) for name in _IDENTITY}
