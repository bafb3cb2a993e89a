"""Between wire messages and the core's messages: commands out, replies and control requests in.

Anything that cannot be read raises `InvalidMessage` with a reason fit for a dead-letter header.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError

from orchestrator.core.messages import OperatorRequest, StartSaga, StepReply
from orchestrator.core.saga import OutgoingCommand
from orchestrator.errors import SagawireError
from orchestrator.runtime.control import CONTROL_VERBS, OperatorCommand
from participants_sdk import protocol
from participants_sdk.headers import (
    HeaderError,
    check_json_content,
    describe,
    valid_traceparent,
)
from participants_sdk.limits import UnstorableData, check_storable
from participants_sdk.saga_client import StartRequest


class InvalidMessage(SagawireError):
    """A message that can never be processed; `reason` goes into the dead-letter headers."""


def command_message(
    command: OutgoingCommand, *, traceparent: str | None = None
) -> protocol.WireMessage:
    """The wire message of a command from a saga's outbox, with the saga's trace context."""
    headers: dict[str, Any] = {
        protocol.H_MACHINE: command.machine,
        protocol.H_VERSION: command.version,
        protocol.H_STEP: command.step,
        protocol.H_VISIT: command.visit,
        protocol.H_ATTEMPT: command.attempt,
        protocol.H_IDEMPOTENCY_KEY: command.idempotency_key,
        protocol.H_SERVICE: command.service,
    }
    if command.compensates is not None:
        headers[protocol.H_COMPENSATES] = command.compensates
    if traceparent is not None:
        headers[protocol.H_TRACEPARENT] = traceparent
    return protocol.WireMessage.json(
        type=command.name,
        payload=command.payload,
        correlation_id=command.saga_id,
        headers=headers,
        message_id=command.message_id,
    ).routed(
        protocol.COMMANDS_EXCHANGE, protocol.command_routing_key(command.service, command.name)
    )


def _body(message: protocol.WireMessage) -> dict[str, Any]:
    try:
        check_json_content(message.content_type, message.content_encoding)
        return protocol.decode_json_object(message.body)
    except (protocol.BodyError, HeaderError) as exc:
        raise InvalidMessage(str(exc)) from None


def _require_header(message: protocol.WireMessage, name: str) -> str:
    try:
        value = message.header_str(name)
    except HeaderError as exc:
        raise InvalidMessage(str(exc)) from None
    if not value:
        raise InvalidMessage(f"header {name} is missing")
    return value


def _require_int_header(message: protocol.WireMessage, name: str) -> int:
    try:
        value = message.header_int(name)
    except HeaderError as exc:
        raise InvalidMessage(str(exc)) from None
    if value is None:
        raise InvalidMessage(f"header {name} is missing")
    if value < 1:
        raise InvalidMessage(f"header {name} must be a positive integer, got {value}")
    return value


def _bool_header(message: protocol.WireMessage, name: str) -> bool:
    try:
        return message.header_bool(name)
    except HeaderError as exc:
        raise InvalidMessage(str(exc)) from None


def saga_id_of(message: protocol.WireMessage) -> str:
    if not message.correlation_id:
        raise InvalidMessage("correlation_id (the saga id) is missing")
    return message.correlation_id


def parse_reply(
    message: protocol.WireMessage, *, queue: str | None = None
) -> tuple[str, StepReply]:
    """(saga id, reply) from a participant's reply taken from `queue`.

    The reply names its service twice, in the routing key and in `x-sagawire-service`; both must
    be the service whose reply queue it came from (when known), and `decide()` then checks that
    this service owns the step.
    """
    saga_id = saga_id_of(message)
    if not message.type:
        raise InvalidMessage("type (the event name) is missing")
    service = _require_header(message, protocol.H_SERVICE)
    if message.routing_key != service:
        raise InvalidMessage(
            f"reply from service {describe(service)} was published with routing key "
            f"{describe(message.routing_key)}; a service replies with its own name as the key"
        )
    if queue is not None and queue != protocol.reply_queue(service):
        raise InvalidMessage(
            f"reply from service {describe(service)} arrived on {queue}, not on "
            f"{protocol.reply_queue(service)}"
        )
    reply = StepReply(
        step=_require_header(message, protocol.H_STEP),
        visit=_require_int_header(message, protocol.H_VISIT),
        attempt=_require_int_header(message, protocol.H_ATTEMPT),
        event=message.type,
        payload=_body(message),
        rejected=_bool_header(message, protocol.H_REJECTED),
        message_id=message.message_id,
        machine=_require_header(message, protocol.H_MACHINE),
        service=service,
    )
    return saga_id, reply


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(x) for x in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_control(
    message: protocol.WireMessage,
) -> tuple[str, StartSaga | OperatorRequest, str | None]:
    """(saga id, core message, machine for a start) from a control request."""
    verb = message.type
    if verb not in CONTROL_VERBS:
        raise InvalidMessage(
            f"unknown control verb {describe(verb)}; expected one of {', '.join(CONTROL_VERBS)}"
        )
    body = _body(message)
    try:
        if verb == "start":
            start = StartRequest.model_validate(body)
            check_storable(start.data, "start data")
            return (
                start.saga_id,
                StartSaga(
                    saga_id=start.saga_id,
                    machine=start.machine,
                    data=start.data,
                    request_id=message.message_id,
                    traceparent=valid_traceparent(message.headers.get(protocol.H_TRACEPARENT)),
                ),
                start.machine,
            )
        request = OperatorCommand.model_validate(body)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {verb} request: {_validation_reason(exc)}") from None
    except UnstorableData as exc:
        raise InvalidMessage(str(exc)) from None
    action: Literal["abort", "retry", "resume"] = verb  # type: ignore[assignment]
    return (
        request.saga_id,
        OperatorRequest(
            action=action,
            operator=request.operator,
            request_id=message.message_id,
            compensate=request.compensate,
            reason=request.reason,
        ),
        None,
    )
