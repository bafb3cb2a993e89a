"""A service's messages: each command it is sent, and each reply it may send back.

A command's payload is its handler's pydantic model when a participant is given for the service,
else the machines' `input` templates. A reply event's payload is the reply model of the handler
returning it, any object for a `Reject` (a business failure), or any object when no participant
is given. A compensation has no `on:`: any reply to it counts, so a compensation without a
handler gets a message standing for any reply (`<command>.reply`).
"""

from __future__ import annotations

from typing import Any, Final

from orchestrator.asyncapi import amqp
from orchestrator.asyncapi.catalog import SentAs, ServiceCatalog
from orchestrator.asyncapi.headers import Presence, command_headers, reply_headers
from orchestrator.asyncapi.participants import HandlerModels
from orchestrator.asyncapi.schemas import (
    FREE_OBJECT,
    ComponentSchemas,
    Schema,
    any_of,
    template_schema,
)

_COMPENSATES: Final[dict[SentAs, Presence]] = {
    "command": "never",
    "compensation": "always",
    "both": "sometimes",
}
"""Whether a command carries `x-sagawire-compensates`, by how the machines send it."""

ANY_REPLY: Final = ".reply"
"""Suffix of the message standing for any reply to a compensation; no event has a dot."""


def reply_keys(entry: ServiceCatalog, handlers: dict[str, HandlerModels]) -> dict[str, list[str]]:
    """Per command, the keys of the reply messages it may get: the events its steps wait for,
    its handler's reply event, and for a compensation without a handler any reply at all."""
    keys = {}
    for command in entry.commands:
        events = entry.events_of(command)
        handler = handlers.get(command)
        if handler is not None and handler.event not in events:
            events.append(handler.event)
        if handler is None and entry.is_compensation(command):
            events.append(command + ANY_REPLY)
        keys[command] = events
    return keys


def command_message(
    entry: ServiceCatalog, command: str, handler: HandlerModels | None, schemas: ComponentSchemas
) -> dict[str, Any]:
    """The message of one command, sent by every step and compensation that names it."""
    uses = entry.commands[command]
    lines = [f"Sent by the {use.where}." for use in uses]
    if handler is not None:
        payload = schemas.model(handler.command, "validation")
        lines.append(f"The participant reads it as `{handler.command.__name__}`.")
    else:
        templates: list[dict[str, Any]] = []
        for use in uses:
            if use.template not in templates:
                templates.append(use.template)
        payload = any_of([template_schema(template) for template in templates])
        lines.append("The body is the step's `input` template filled from saga data.")
    presence: Presence = _COMPENSATES[entry.sent_as(command)]
    return amqp.message(
        name=command,
        title=_title(command),
        summary=f"Command `{command}` to service `{entry.service}`.",
        description=" ".join([*lines, amqp.PROPERTIES]),
        headers=command_headers(
            entry.service,
            (u.machine for u in uses),
            (u.step for u in uses),
            compensation=presence,
        ),
        payload=payload,
        message_type=command,
    )


def reply_message(
    entry: ServiceCatalog,
    key: str,
    handlers: dict[str, HandlerModels],
    schemas: ComponentSchemas,
) -> dict[str, Any]:
    """The message of one reply event (or, for `<command>.reply`, of any reply to a
    compensation), whichever of the service's commands it answers."""
    if key.endswith(ANY_REPLY):
        return _any_compensation_reply(entry, key.removesuffix(ANY_REPLY))
    expected = entry.expecting(key)
    producers = sorted(c for c, h in handlers.items() if c in entry.commands and h.event == key)
    rejecting = sorted({x.command for x in expected if x.command in handlers} - set(producers))
    unknown = sorted({x.command for x in expected if x.command not in handlers})
    lines = [f"Awaited by the {x.meaning}." for x in expected]
    payloads: list[Schema] = []
    for command in producers:
        payloads.append(schemas.model(handlers[command].reply, "serialization"))
        lines.append(_produced(entry, command, key, handlers[command]))
    if rejecting:
        payloads.append({**FREE_OBJECT, "description": "The details given to `Reject`."})
        lines.append(
            f"A business failure: `Reject({key!r}, **details)` in the participant's "
            f"handler of {_names(rejecting)}."
        )
    if unknown:
        payloads.append({"type": "object", "description": " ".join(lines[: len(expected)])})
    rejected: bool | None = None
    if not unknown:
        rejected = True if not producers else False if not rejecting else None
    steps = [x.use.step for x in expected] + [
        use.step for command in producers for use in entry.commands[command]
    ]
    machines = [x.use.machine for x in expected] + [
        use.machine for command in producers for use in entry.commands[command]
    ]
    return amqp.message(
        name=key,
        title=_title(key),
        summary=f"Reply `{key}` from service `{entry.service}`.",
        description=" ".join([*lines, amqp.PROPERTIES]),
        headers=reply_headers(entry.service, machines, steps, rejected=rejected),
        payload=any_of(payloads),
        message_type=key,
    )


def _produced(entry: ServiceCatalog, command: str, event: str, handler: HandlerModels) -> str:
    line = f"The participant's reply to `{command}` (`{handler.reply.__name__}`)."
    if entry.is_compensation(command):
        line += " To a compensation any event counts: done unless rejected; the body is not kept."
    if any(not use.compensation for use in entry.commands[command]) and event not in (
        entry.events_of(command)
    ):
        line += " No step sending it waits for this event: the orchestrator dead-letters it."
    return line


def _any_compensation_reply(entry: ServiceCatalog, command: str) -> dict[str, Any]:
    uses = [use for use in entry.commands[command] if use.compensation]
    return amqp.message(
        name=command + ANY_REPLY,
        title=f"Reply to compensation {command}",
        summary=f"Any reply to compensation `{command}` from service `{entry.service}`.",
        description=(
            f"The reply to `{command}` sent by the "
            + ", ".join(use.where for use in uses)
            + ". The participant names any event in the AMQP `type` property: the compensation "
            "is done unless `x-sagawire-rejected` is true: then it is sent again, up to its "
            "`retry.attempts`. " + amqp.PROPERTIES
        ),
        headers=reply_headers(
            entry.service, (u.machine for u in uses), (u.step for u in uses), rejected=None
        ),
        payload={"type": "object", "description": "Any object; not kept in saga data."},
    )


def _title(name: str) -> str:
    """`execute_payment` as `Execute payment`."""
    words = name.replace("_", " ").replace("-", " ")
    return words[:1].upper() + words[1:]


def _names(commands: list[str]) -> str:
    return ", ".join(f"`{command}`" for command in commands)
