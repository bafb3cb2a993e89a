"""Counters of what the runtime did: the demo summary, tests, and the Prometheus endpoint."""

from __future__ import annotations

import bisect
import collections
import dataclasses
from typing import Final

from orchestrator.core.messages import Decision, Disposition, Message, StepReply
from orchestrator.core.saga import Saga

LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


@dataclasses.dataclass
class Histogram:
    """Cumulative-bucket histogram in Prometheus' shape, cheap to observe."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        running, out = 0, []
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclasses.dataclass
class RuntimeStats:
    decisions: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    finished: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    dead_lettered: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    step_latency: Histogram = dataclasses.field(default_factory=Histogram)
    saga_duration: Histogram = dataclasses.field(default_factory=Histogram)
    commands_published: int = 0
    publishing: int = 0
    """Commands stored and being published right now: the outbox backlog of this process."""
    conflicts: int = 0
    backpressure_waits: int = 0
    passivated: int = 0
    timer_fires: int = 0
    recovered_outboxes: int = 0
    deadlines_moved: int = 0
    """Sagas saved again because a confirm came late: their deadlines count from it."""
    transient_failures: int = 0
    requeued: int = 0
    sweep_seconds: float = 0.0
    """How long the last look for due sagas in the store took."""

    def count_decision(self, message: Message, before: Saga | None, decision: Decision) -> None:
        self.decisions[decision.disposition.value] += 1
        saga = decision.saga
        if saga.status.finished and (before is None or not before.status.finished):
            self.finished[saga.status.value] += 1
            self.saga_duration.observe((saga.updated_at - saga.created_at).total_seconds())
        if (
            isinstance(message, StepReply)
            and decision.disposition is Disposition.APPLIED
            and before is not None
            and (pending := before.pending_step(message.step)) is not None
        ):
            self.step_latency.observe((saga.updated_at - pending.sent_at).total_seconds())

    def summary(self) -> dict[str, object]:
        return {
            "decisions": dict(self.decisions),
            "finished": dict(self.finished),
            "dead_lettered": dict(self.dead_lettered),
            "commands_published": self.commands_published,
            "conflicts": self.conflicts,
            "passivated": self.passivated,
            "deadlines_moved": self.deadlines_moved,
        }
