"""An AsyncAPI 3.0.0 document of a Sagawire system: machines and participants in, a dict out.

The operations take the point of view of a participant service: it receives each of its
commands on its command channel and sends the reply on its reply channel (the command
operation's `reply`); the orchestrator does the opposite of each. On the control channel a
client of the orchestrator (a service starting sagas, an operator) sends the requests.

Payloads come from the participant's pydantic models where one is given for the service, else
from the machines: a command's body from its `input` template, a reply's as any object.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal

from orchestrator.asyncapi import amqp
from orchestrator.asyncapi.catalog import ServiceCatalog, catalog
from orchestrator.asyncapi.control import CHANNEL as CONTROL_CHANNEL
from orchestrator.asyncapi.control import control
from orchestrator.asyncapi.messages import command_message, reply_keys, reply_message
from orchestrator.asyncapi.participants import HandlerModels, UnknownService, by_service
from orchestrator.asyncapi.schemas import ComponentSchemas
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.validation import suggestion
from participants_sdk import Participant, protocol

ASYNCAPI_VERSION: Final = "3.0.0"


def asyncapi_document(
    machines: Iterable[MachineDefinition],
    *,
    version: str,
    participants: Iterable[Participant] = (),
    service: str | None = None,
) -> dict[str, Any]:
    """The document of every service the machines command, or of `service` alone (its command
    and reply channels, without the control channel). `version` is the document's version."""
    definitions = list(machines)
    services = catalog(definitions)
    if service is not None:
        if service not in services:
            raise UnknownService(
                f"unknown service {service!r}{suggestion(service, services)}; "
                f"services the machines send commands to: {', '.join(services) or 'none'}"
            )
        services = {service: services[service]}
    document = _Document(by_service(participants))
    for entry in services.values():
        document.add_service(entry)
    if service is None:
        document.add_control({d.machine for d in definitions})
    components: dict[str, Any] = {"messages": document.messages}
    if document.schemas.schemas:
        components["schemas"] = document.schemas.schemas
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(version, service, definitions),
        "defaultContentType": protocol.CONTENT_TYPE_JSON,
        "channels": document.channels,
        "operations": document.operations,
        "components": components,
    }


class _Document:
    def __init__(self, models: dict[str, dict[str, HandlerModels]]) -> None:
        self.models = models
        self.schemas = ComponentSchemas()
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}

    def add_control(self, machines: Iterable[str]) -> None:
        channel, messages, operations = control(machines, self.schemas)
        self.channels[CONTROL_CHANNEL] = channel
        self.messages.update(messages)
        self.operations.update(operations)

    def add_service(self, entry: ServiceCatalog) -> None:
        service, handlers = entry.service, self.models.get(entry.service, {})
        commands_id, replies_id = f"{service}.commands", f"{service}.replies"
        replies = reply_keys(entry, handlers)
        for command in entry.commands:
            self.messages[f"{service}.command.{command}"] = command_message(
                entry, command, handlers.get(command), self.schemas
            )
        for key in sorted({key for keys in replies.values() for key in keys}):
            self.messages[f"{service}.reply.{key}"] = reply_message(
                entry, key, handlers, self.schemas
            )
        self.channels[commands_id] = amqp.channel(
            address=protocol.command_routing_key(service, "{command}"),
            parameters={
                "command": {
                    "enum": sorted(entry.commands),
                    "description": "The command's name, also its AMQP `type` property.",
                }
            },
            exchange=protocol.COMMANDS_EXCHANGE,
            exchange_type="topic",
            queue=protocol.command_queue(service),
            description=(
                f"Commands to service `{service}`: published to exchange "
                f"`{protocol.COMMANDS_EXCHANGE}` with routing key "
                f"`{protocol.command_routing_key(service, '<command>')}`; queue "
                f"`{protocol.command_queue(service)}` (bound with "
                f"`{protocol.command_binding(service)}`) holds them for the service."
            ),
            messages={c: _message_ref(service, "command", c) for c in sorted(entry.commands)},
        )
        self.channels[replies_id] = amqp.channel(
            address=service,
            exchange=protocol.REPLIES_EXCHANGE,
            exchange_type="direct",
            queue=protocol.reply_queue(service),
            description=(
                f"Replies of service `{service}`: published to exchange "
                f"`{protocol.REPLIES_EXCHANGE}` with the service's name as routing key; the "
                f"orchestrator consumes queue `{protocol.reply_queue(service)}`. The AMQP "
                "`type` property is the event."
            ),
            messages={
                key: _message_ref(service, "reply", key)
                for key in sorted({key for keys in replies.values() for key in keys})
            },
        )
        for command in sorted(entry.commands):
            self.operations[f"{service}.{command}"] = _operation(
                entry, command, replies[command], handlers.get(command)
            )


def _operation(
    entry: ServiceCatalog, command: str, replies: list[str], handler: HandlerModels | None
) -> dict[str, Any]:
    commands_id, replies_id = f"{entry.service}.commands", f"{entry.service}.replies"
    kind = {
        "command": "command",
        "compensation": "compensation",
        "both": "command (and compensation)",
    }[entry.sent_as(command)]
    operation: dict[str, Any] = {
        "action": "receive",
        "channel": amqp.ref("channels", commands_id),
        "title": f"Handle {command}",
        "summary": f"Service `{entry.service}` handles {kind} `{command}` and replies.",
        "description": (
            "Apply the command once per `x-sagawire-idempotency-key` and reply to exchange "
            f"`{protocol.REPLIES_EXCHANGE}` with routing key `{entry.service}`, copying the "
            "command's `correlation_id` and its machine, version, step, visit, attempt, "
            "idempotency key and `traceparent` headers."
            + ("" if handler is None else f" Handled by the participant's `{command}` handler.")
        ),
        "messages": [amqp.ref("channels", commands_id, "messages", command)],
    }
    if replies:
        operation["reply"] = {
            "channel": amqp.ref("channels", replies_id),
            "messages": [amqp.ref("channels", replies_id, "messages", key) for key in replies],
        }
    return operation


def _message_ref(service: str, kind: Literal["command", "reply"], key: str) -> dict[str, str]:
    return amqp.ref("components", "messages", f"{service}.{kind}.{key}")


def _info(
    version: str, service: str | None, definitions: list[MachineDefinition]
) -> dict[str, Any]:
    machines = ", ".join(f"{d.machine} v{d.version}" for d in definitions) or "none"
    scope = (
        "The commands and replies between the Sagawire saga orchestrator and its participant "
        f"services, and its control requests, over RabbitMQ; from the machines {machines}."
        if service is None
        else f"The commands service `{service}` receives from the Sagawire saga orchestrator "
        f"and the replies it sends, over RabbitMQ; from the machines {machines}. The control "
        "channel (starting sagas, operators' requests) is in the document of the whole system."
    )
    viewpoint = (
        "Operations are written from the point of view of a participant service: it "
        "**receives** each of its commands on its command channel and sends the reply on its "
        "reply channel (the operation's `reply`); the orchestrator does the opposite."
    )
    if service is None:
        viewpoint += (
            " On the control channel a client of the orchestrator (a service starting sagas, an "
            "operator) **sends** its requests."
        )
    paragraphs = [
        scope,
        viewpoint,
        amqp.PROPERTIES + " Integer headers may arrive as decimal strings, booleans as 0, 1, "
        "`true` or `false`.",
        (
            "Each channel is a routing key on a durable exchange in virtual host "
            f"`{amqp.VHOST}` (or the one the AMQP URL names); `x-sagawire-queue` names the queue "
            f"bound to it. Every queue dead-letters to `{protocol.DEAD_LETTER_EXCHANGE}` into "
            f"`{protocol.dead_letter_queue('<queue>')}`."
        ),
    ]
    title = "Sagawire" if service is None else f"Sagawire: service {service}"
    return {"title": title, "version": version, "description": "\n\n".join(paragraphs)}
