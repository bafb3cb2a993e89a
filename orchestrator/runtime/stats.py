"""Counters of what the runtime did, for the demo summary, tests and (later) metrics."""

from __future__ import annotations

import collections
import dataclasses

from orchestrator.core.messages import Decision
from orchestrator.core.saga import Saga


@dataclasses.dataclass
class RuntimeStats:
    decisions: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    finished: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    dead_lettered: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    commands_published: int = 0
    conflicts: int = 0
    backpressure_waits: int = 0
    passivated: int = 0
    timer_fires: int = 0
    recovered_outboxes: int = 0
    transient_failures: int = 0
    requeued: int = 0

    def count_decision(self, decision: Decision, stored: Saga) -> None:
        self.decisions[decision.disposition.value] += 1
        if stored.status.finished and stored.finished_at == stored.updated_at:
            self.finished[stored.status.value] += 1

    def summary(self) -> dict[str, object]:
        return {
            "decisions": dict(self.decisions),
            "finished": dict(self.finished),
            "dead_lettered": dict(self.dead_lettered),
            "commands_published": self.commands_published,
            "conflicts": self.conflicts,
            "passivated": self.passivated,
        }
