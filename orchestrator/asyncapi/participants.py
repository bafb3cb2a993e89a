"""The pydantic models behind a `Participant`'s handlers: each command's input and its reply.

`@participant.command_handler(name)` checked, when it was applied, that the handler takes a
command model and returns a reply model; the reply's event is the model's `event_name` or its
class name in snake_case. A `Reject(event, **details)` has no model: its body is any object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from pydantic import BaseModel

from orchestrator.asyncapi.catalog import catalog
from orchestrator.core.definition import MachineDefinition
from orchestrator.errors import SagawireError
from participants_sdk import Participant


class AsyncApiError(SagawireError):
    """The document cannot be made as asked: two participants for one service, say."""


class UnknownService(AsyncApiError):
    """`--service` names a service no machine sends commands to."""


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerModels:
    command: type[BaseModel]
    reply: type[BaseModel]
    event: str


def handler_models(participant: Participant) -> dict[str, HandlerModels]:
    """By command name, the models of the participant's handlers."""
    return {
        command: HandlerModels(handler.command_model, handler.reply_model, handler.event)
        for command, handler in sorted(participant.handlers.items())
    }


def by_service(participants: Iterable[Participant]) -> dict[str, dict[str, HandlerModels]]:
    """Handler models by service and command; two participants for one service are refused."""
    found: dict[str, dict[str, HandlerModels]] = {}
    for participant in participants:
        if participant.service in found:
            raise AsyncApiError(
                f"two participants for service {participant.service!r}: pass one per service"
            )
        found[participant.service] = handler_models(participant)
    return found


def unmatched(
    machines: Iterable[MachineDefinition], participants: Iterable[Participant]
) -> list[str]:
    """The participants' handlers no machine sends a command to, one line each: they are left
    out of the document."""
    sent = {service: set(entry.commands) for service, entry in catalog(machines).items()}
    lines = []
    for participant in participants:
        if participant.service not in sent:
            lines.append(
                f"participant {participant.service!r}: no machine sends commands to this service"
            )
            continue
        lines.extend(
            f"participant {participant.service!r}: no machine sends {command!r}; "
            "its handler is left out"
            for command in participant.commands
            if command not in sent[participant.service]
        )
    return lines
