"""What the machines send to each service, and which replies they wait for.

Every task state and every branch of a parallel state sends one command, and may name a
compensation; `on:` names the reply events its step waits for. A compensation has no `on:`: any
reply to it counts as done unless it is rejected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Literal

from orchestrator.core.definition import (
    COMPENSATE,
    Branch,
    CommandSpec,
    MachineDefinition,
    ParallelState,
    TaskState,
)
from orchestrator.core.saga import COMPENSATION_PREFIX

SentAs = Literal["command", "compensation", "both"]


@dataclasses.dataclass(frozen=True, slots=True)
class Use:
    """One place a machine sends a command: a step, or the compensation of one."""

    machine: str
    version: int
    step: str
    """As in `x-sagawire-step`: `state`, `state.branch`, or `compensate:<step>`."""
    template: dict[str, Any]
    compensation: bool

    @property
    def where(self) -> str:
        kind = "compensation step" if self.compensation else "step"
        return f"{kind} `{self.step}` of machine {self.machine} v{self.version}"


@dataclasses.dataclass(frozen=True, slots=True)
class Expected:
    """A reply event a step waits for, and what the machine does on it."""

    event: str
    command: str
    use: Use
    outcome: str
    save_as: str | None

    @property
    def meaning(self) -> str:
        kept = f"; the body is kept in saga data at `{self.save_as}`" if self.save_as else ""
        return f"{self.use.where}: {self.outcome}{kept}"


@dataclasses.dataclass
class ServiceCatalog:
    """Everything the machines send to one service and wait for from it."""

    service: str
    commands: dict[str, list[Use]] = dataclasses.field(default_factory=dict)
    expected: list[Expected] = dataclasses.field(default_factory=list)

    def events_of(self, command: str) -> list[str]:
        """The events the steps sending `command` wait for, in the order the machines name them."""
        return list(dict.fromkeys(e.event for e in self.expected if e.command == command))

    def expecting(self, event: str) -> list[Expected]:
        return [e for e in self.expected if e.event == event]

    def is_compensation(self, command: str) -> bool:
        return any(use.compensation for use in self.commands[command])

    def sent_as(self, command: str) -> SentAs:
        """Whether the machines send `command` as a step, as a compensation, or as both."""
        kinds = {use.compensation for use in self.commands[command]}
        return "both" if len(kinds) == 2 else "compensation" if True in kinds else "command"


def catalog(machines: Iterable[MachineDefinition]) -> dict[str, ServiceCatalog]:
    """Per service, by name: its commands with where each is sent, and the replies awaited."""
    found: dict[str, ServiceCatalog] = {}
    for definition in machines:
        for name, state in definition.states.items():
            if isinstance(state, TaskState):
                outcomes = {
                    event: (
                        "compensate" if t.goto == COMPENSATE else f"go to `{t.goto}`",
                        t.save_as,
                    )
                    for event, t in state.on.items()
                }
                _action(found, definition, name, state, outcomes)
            elif isinstance(state, ParallelState):
                for branch_name, branch in state.parallel.items():
                    outcomes = {
                        event: (f"branch {r.result}", r.save_as) for event, r in branch.on.items()
                    }
                    _action(found, definition, f"{name}.{branch_name}", branch, outcomes)
    return dict(sorted(found.items()))


def _action(
    found: dict[str, ServiceCatalog],
    definition: MachineDefinition,
    step: str,
    action: TaskState | Branch,
    outcomes: dict[str, tuple[str, str | None]],
) -> None:
    use = _use(found, definition, step, action.command, compensation=False)
    service = found[action.command.service]
    for event, (outcome, save_as) in outcomes.items():
        service.expected.append(Expected(event, action.command.name, use, outcome, save_as))
    if action.compensation is not None:
        _use(found, definition, COMPENSATION_PREFIX + step, action.compensation, compensation=True)


def _use(
    found: dict[str, ServiceCatalog],
    definition: MachineDefinition,
    step: str,
    spec: CommandSpec,
    *,
    compensation: bool,
) -> Use:
    use = Use(definition.machine, definition.version, step, spec.input, compensation)
    service = found.setdefault(spec.service, ServiceCatalog(spec.service))
    service.commands.setdefault(spec.name, []).append(use)
    return use
