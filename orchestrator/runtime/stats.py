"""Counters of what the runtime did: the demo summary, tests, and the Prometheus endpoint.

Counting is a dict increment on a message's path; `daemon.metrics` reads the counts when scraped.
The keys are names from the machine definitions (machine, step, service), never values a message
carries: a step's latency is keyed by the pending step the reply answered, a command by the
command the saga sent, a dead letter by the service whose reply queue it came from. So there
are at most as many keys as the definitions have names.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Final

from orchestrator.core.messages import Decision, Disposition, Message, StepReply, TimerFired
from orchestrator.core.saga import OutgoingCommand, Saga
from participants_sdk.stats import Histogram

__all__ = ["UNKNOWN_SERVICE", "Histogram", "RuntimeStats"]

UNKNOWN_SERVICE: Final = "unknown"
"""The service of a dead letter taken from a queue no declared service replies on."""

MachineStep = tuple[str, str]
"""(machine, step): the step as the saga names it, `compensate:<step>` for a compensation."""


def _histograms() -> collections.defaultdict[str, Histogram]:
    return collections.defaultdict(Histogram)


def _step_histograms() -> collections.defaultdict[MachineStep, Histogram]:
    return collections.defaultdict(Histogram)


@dataclasses.dataclass
class RuntimeStats:
    decisions: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    """Messages by what became of them (`Disposition`)."""
    finished: collections.Counter[tuple[str, str]] = dataclasses.field(
        default_factory=collections.Counter
    )
    """Sagas finished, by (machine, outcome)."""
    dead_lettered: collections.Counter[tuple[str, str]] = dataclasses.field(
        default_factory=collections.Counter
    )
    """Deliveries dead-lettered, by (kind, service); the service is empty for control requests."""
    step_latency: collections.defaultdict[MachineStep, Histogram] = dataclasses.field(
        default_factory=_step_histograms
    )
    """From sending a step's command to applying its reply, by (machine, step)."""
    saga_duration: collections.defaultdict[str, Histogram] = dataclasses.field(
        default_factory=_histograms
    )
    """From a saga's start to its outcome, by machine."""
    commands_published: collections.Counter[tuple[str, str]] = dataclasses.field(
        default_factory=collections.Counter
    )
    """Commands the broker confirmed, by (machine, service)."""
    step_timeouts: collections.Counter[MachineStep] = dataclasses.field(
        default_factory=collections.Counter
    )
    """Attempts whose reply deadline passed, by (machine, step)."""
    step_retries: collections.Counter[MachineStep] = dataclasses.field(
        default_factory=collections.Counter
    )
    """Commands sent as a second or later attempt, by (machine, step)."""
    publishing: int = 0
    """Commands stored and being published right now: the outbox backlog of this process."""
    conflicts: int = 0
    backpressure_waits: int = 0
    """Deliveries that waited for an actor slot: every live actor was busy."""
    passivated: int = 0
    timer_fires: int = 0
    recovered_outboxes: int = 0
    sweep_wakeups: int = 0
    """Due sagas the sweeper found in the store with no timer in this process."""
    deadlines_moved: int = 0
    """Sagas saved again because a confirm came late: their deadlines count from it."""
    transient_failures: int = 0
    requeued: int = 0
    """Deliveries requeued after the store or broker kept failing."""
    requeued_stopping: int = 0
    """Deliveries requeued because the runtime was stopping."""
    sweep_seconds: float = 0.0
    """How long the last look for due sagas in the store took."""

    def count_decision(self, message: Message, before: Saga | None, decision: Decision) -> None:
        """Count a decision that was stored (and its commands confirmed)."""
        self.decisions[decision.disposition.value] += 1
        saga = decision.saga
        machine = saga.machine
        if saga.status.finished and (before is None or not before.status.finished):
            self.finished[machine, saga.status.value] += 1
            self.saga_duration[machine].observe((saga.updated_at - saga.created_at).total_seconds())
        if isinstance(message, StepReply):
            if (
                decision.disposition is Disposition.APPLIED
                and before is not None
                and (pending := before.pending_step(message.step)) is not None
            ):
                latency = (saga.updated_at - pending.sent_at).total_seconds()
                self.step_latency[machine, pending.step].observe(latency)
        elif isinstance(message, TimerFired) and before is not None:
            self._count_timeouts(before, saga.updated_at)
        for command in decision.commands:
            if command.attempt > 1:
                self.step_retries[machine, command.step] += 1

    def _count_timeouts(self, before: Saga, now: dt.datetime) -> None:
        """The attempts a timer found still waiting for their reply past the deadline."""
        for pending in before.pending:
            if pending.waiting == "reply" and pending.deadline <= now:
                self.step_timeouts[before.machine, pending.step] += 1

    def count_published(self, commands: Iterable[OutgoingCommand]) -> None:
        published = self.commands_published
        for command in commands:
            published[command.machine, command.service] += 1

    def summary(self) -> dict[str, object]:
        """The counts for a log line: by outcome and by kind, summed over machines and services."""
        finished: collections.Counter[str] = collections.Counter()
        for (_, outcome), n in self.finished.items():
            finished[outcome] += n
        dead_lettered: collections.Counter[str] = collections.Counter()
        for (kind, _), n in self.dead_lettered.items():
            dead_lettered[kind] += n
        return {
            "decisions": dict(self.decisions),
            "finished": dict(finished),
            "dead_lettered": dict(dead_lettered),
            "commands_published": self.commands_published.total(),
            "conflicts": self.conflicts,
            "passivated": self.passivated,
            "deadlines_moved": self.deadlines_moved,
        }
