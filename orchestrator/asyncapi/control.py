"""The control channel: start a saga, and the operators' abort, retry and resume.

Their bodies are the models the daemon reads them with (`StartRequest`, `OperatorCommand`); the
AMQP `type` property is the verb and `correlation_id` the saga id, which the body holds too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from orchestrator.asyncapi import amqp
from orchestrator.asyncapi.headers import start_headers
from orchestrator.asyncapi.schemas import ComponentSchemas, Schema
from orchestrator.runtime.control import CONTROL_VERBS, OperatorCommand
from participants_sdk import protocol
from participants_sdk.saga_client import StartRequest

CHANNEL: Final = "control"

_MEANING: Final = {
    "start": (
        "Start a saga",
        (
            "Starts a saga of `machine` with `data` as its saga data, and with the trace context "
            "of its `traceparent` header if it has one. Starting a saga id that "
            "exists with the same machine and data changes nothing; with another machine or other "
            "data it is refused (dead-lettered with the reason)."
        ),
    ),
    "abort": (
        "Abort a saga",
        (
            "Stops a saga; with `compensate: true` it runs the compensations of the steps done "
            "first. Recorded in the saga's history with `operator` and `reason`."
        ),
    ),
    "retry": (
        "Retry a saga's pending step",
        (
            "Sends the pending step's command again as a new attempt of the same visit. "
            "`compensate` is not used. Recorded with `operator` and `reason`."
        ),
    ),
    "resume": (
        "Resume a compensation that gave up",
        (
            "Continues a compensation that failed, once its cause is fixed. `compensate` is not "
            "used. Recorded with `operator` and `reason`."
        ),
    ),
}

_SAGA_ID: Final = {
    "location": "$message.payload#/saga_id",
    "description": "The saga id; also sent as the AMQP `correlation_id` property.",
}


def control(
    machines: Iterable[str], schemas: ComponentSchemas
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The control channel, its messages (components' keys) and its operations: a client of the
    orchestrator (a service starting sagas, an operator's CLI) sends each request."""
    messages = {f"{CHANNEL}.{verb}": _message(verb, machines, schemas) for verb in CONTROL_VERBS}
    channel = amqp.channel(
        address=protocol.CONTROL_ROUTING_KEY,
        exchange=protocol.CONTROL_EXCHANGE,
        exchange_type="direct",
        queue=protocol.CONTROL_QUEUE,
        description=(
            f"Requests to the orchestrator: published to exchange `{protocol.CONTROL_EXCHANGE}` "
            f"with routing key `{protocol.CONTROL_ROUTING_KEY}`; the daemon consumes queue "
            f"`{protocol.CONTROL_QUEUE}`. The AMQP `type` property is the verb."
        ),
        messages={
            verb: amqp.ref("components", "messages", f"{CHANNEL}.{verb}") for verb in CONTROL_VERBS
        },
    )
    operations = {
        f"{verb}_saga": {
            "action": "send",
            "channel": amqp.ref("channels", CHANNEL),
            "title": _MEANING[verb][0],
            "summary": _MEANING[verb][0],
            "messages": [amqp.ref("channels", CHANNEL, "messages", verb)],
        }
        for verb in CONTROL_VERBS
    }
    return channel, messages, operations


def _message(verb: str, machines: Iterable[str], schemas: ComponentSchemas) -> dict[str, Any]:
    title, description = _MEANING[verb]
    if verb == "start":
        headers: Schema | None = start_headers()
        payload = schemas.model(StartRequest, "validation")
        known = sorted(set(machines))
        if known:
            payload = {"allOf": [payload, {"properties": {"machine": {"enum": known}}}]}
            description += f" Machines: {', '.join(f'`{name}`' for name in known)}."
    else:
        headers = None
        payload = schemas.model(OperatorCommand, "validation")
    return amqp.message(
        name=verb,
        title=title,
        summary=f"`{verb}` request on the control queue.",
        description=description,
        headers=headers,
        payload=payload,
        message_type=verb,
        correlation_id=dict(_SAGA_ID),
    )
