"""Static checks of a machine's graph, run after pydantic has parsed the definition.

Pydantic checks each field on its own; these checks look at the machine as a whole: every target
names a state, every state can be reached and can be left, choice states cannot spin without
waiting, and every compensation goes to a service the machine talks to. Each problem is one line
that names the source, machine, version, state and field, so an author can go straight to it.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from orchestrator.core.definition import (
    COMPENSATE,
    Branch,
    ChoiceState,
    FinalState,
    MachineDefinition,
    ParallelState,
    TaskState,
)

if TYPE_CHECKING:
    from collections.abc import Iterable


def validate_definition(definition: MachineDefinition, source: str) -> list[str]:
    """Every graph problem of `definition`, one line each; an empty list when it is sound."""
    return _Checker(definition, source).run()


def suggestion(word: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a known word is close to `word`, else an empty string."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Checker:
    def __init__(self, definition: MachineDefinition, source: str) -> None:
        self.definition = definition
        self.states = definition.states
        self.head = f"{source}: machine '{definition.machine}' v{definition.version}"
        self.problems: list[str] = []
        # Edges that lead to a state of this machine; `compensate` and dangling targets excluded.
        self.edges: dict[str, list[tuple[str, str]]] = {
            name: [(field, target) for field, target in state.targets() if target in self.states]
            for name, state in self.states.items()
        }

    def machine_problem(self, field: str, message: str) -> None:
        self.problems.append(f"{self.head}: field '{field}': {message}")

    def state_problem(self, state: str, field: str, message: str) -> None:
        self.problems.append(f"{self.head}: state '{state}': field '{field}': {message}")

    def run(self) -> list[str]:
        initial = self.definition.initial
        if initial not in self.states:
            self.machine_problem(
                "initial", f"unknown state '{initial}'{self._did_you_mean(initial)}"
            )
        if not any(isinstance(state, FinalState) for state in self.states.values()):
            self.machine_problem(
                "states", "no final state; add one, e.g. 'done: {final: succeeded}'"
            )
        self._check_targets()
        if initial in self.states:
            self._check_reachable(initial)
        self._check_ways_out()
        self._check_choice_cycles()
        self._check_compensation_services()
        return self.problems

    def _did_you_mean(self, name: str, *, compensate: bool = False) -> str:
        known = [*self.states, COMPENSATE] if compensate else list(self.states)
        listed = ", ".join(self.states) + (f", or '{COMPENSATE}'" if compensate else "")
        return f"{suggestion(name, known)}; known states: {listed}"

    def _check_targets(self) -> None:
        for name, state in self.states.items():
            for field, target in state.targets():
                if target != COMPENSATE and target not in self.states:
                    self.state_problem(
                        name,
                        field,
                        f"unknown target state '{target}'"
                        f"{self._did_you_mean(target, compensate=True)}",
                    )

    def _check_reachable(self, initial: str) -> None:
        reached = self._reachable_from(initial)
        for name in self.states:
            if name not in reached:
                self.state_problem(
                    name,
                    f"states.{name}",
                    f"unreachable: no transition leads here from the initial state '{initial}'",
                )

    def _check_ways_out(self) -> None:
        # A state has a way out when some path from it ends in a final state or in `compensate`.
        # A dangling target counts as a way out here: it is reported once already, above.
        can_exit = {name for name, state in self.states.items() if isinstance(state, FinalState)}
        can_exit |= {
            name
            for name, state in self.states.items()
            if any(target not in self.states for _, target in state.targets())
        }
        changed = True
        while changed:
            changed = False
            for name in self.states:
                if name not in can_exit and any(t in can_exit for _, t in self.edges[name]):
                    can_exit.add(name)
                    changed = True
        for name, state in self.states.items():
            if isinstance(state, TaskState) and not state.on:
                self.state_problem(
                    name,
                    "on",
                    "no events: a task needs at least one event in 'on', "
                    "e.g. 'on: {done: next_state}'; without one it can only time out",
                )
            elif name not in can_exit:
                loop = sorted(self._reachable_from(name))
                self.state_problem(
                    name,
                    f"states.{name}",
                    f"no way out: every path from here stays within {', '.join(loop)}; "
                    f"none reaches a final state or '{COMPENSATE}'",
                )

    def _reachable_from(self, start: str) -> set[str]:
        seen = {start}
        pending = [start]
        while pending:
            for _, target in self.edges[pending.pop()]:
                if target not in seen:
                    seen.add(target)
                    pending.append(target)
        return seen

    def _check_choice_cycles(self) -> None:
        choices = [name for name, state in self.states.items() if isinstance(state, ChoiceState)]
        reported: set[str] = set()
        for name in choices:
            if name in reported:
                continue
            # The choice states that lead back to `name` through choice states only.
            ring = {
                other for other in self._choice_reach(name) if name in self._choice_reach(other)
            }
            if not ring:
                continue
            reported |= ring
            field = next(f for f, target in self.edges[name] if target in ring)
            members = ", ".join(c for c in choices if c in ring)
            self.state_problem(
                name,
                field,
                f"choice states {members} form a cycle with no task in between; "
                "it would loop forever without waiting for a reply",
            )

    def _choice_reach(self, start: str) -> set[str]:
        """Choice states reachable from `start` in one or more steps through choice states."""
        seen: set[str] = set()
        pending = [start]
        while pending:
            for _, target in self.edges[pending.pop()]:
                if isinstance(self.states[target], ChoiceState) and target not in seen:
                    seen.add(target)
                    pending.append(target)
        return seen

    def _check_compensation_services(self) -> None:
        actions: list[tuple[str, str, TaskState | Branch]] = []
        for name, state in self.states.items():
            if isinstance(state, TaskState):
                actions.append((name, "", state))
            elif isinstance(state, ParallelState):
                actions.extend(
                    (name, f"parallel.{branch}.", spec) for branch, spec in state.parallel.items()
                )
        commanded = sorted({action.command.service for _, _, action in actions})
        for name, prefix, action in actions:
            service = action.compensation.service if action.compensation else None
            if service is not None and service not in commanded:
                self.state_problem(
                    name,
                    f"{prefix}compensation.service",
                    f"unknown service '{service}' in compensation: no command of this machine "
                    f"goes to it{suggestion(service, commanded)}; "
                    f"services: {', '.join(commanded)}",
                )
