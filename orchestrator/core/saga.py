"""The state of one saga: what `decide()` reads and returns, and what the store keeps."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

HISTORY_LIMIT: Final = 100
RECENT_REQUESTS_LIMIT: Final = 32
COMPENSATION_PREFIX: Final = "compensate:"


def copy_json(value: Any) -> Any:  # noqa: ANN401 - JSON data
    """Deep copy of JSON-shaped data (dicts, lists, scalars), far faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def start_digest(machine: str, data: dict[str, Any]) -> str:
    """A digest of a start request's machine and data, independent of key order."""
    canonical = json.dumps(
        [machine, data], sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class SagaStatus(StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    COMPENSATED = "compensated"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        return self not in (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


# A saga's parts (outbox commands, pending steps, completed steps, history entries) are slotted
# dataclasses, which pydantic validates and dumps as it does models (`__pydantic_config__` keeps
# unknown fields an error). Each costs about 100 bytes where a pydantic model, with its
# `__dict__` and fields-set, costs about 1 KB, and is quicker to make. The frozen ones are shared
# by a saga's forks; a fork copies a pending step only for its payload.


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingCommand:
    """A command to send: the saga's outbox holds these until the broker confirmed them."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    message_id: str
    saga_id: str
    machine: str
    version: int
    service: str
    name: str
    step: str
    visit: int
    attempt: int
    idempotency_key: str
    payload: dict[str, Any]
    compensates: str | None = None
    """For a compensation: the idempotency key of the step it undoes."""


@dataclasses.dataclass(slots=True, kw_only=True)
class PendingStep:
    """A command the saga waits on: an action step or a compensation."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    step: str
    """Wire step id: `state`, `state.branch`, or `compensate:<action step>`."""
    phase: Literal["action", "compensation"]
    state: str
    service: str
    command: str
    visit: int
    attempt: int
    max_attempts: int
    waiting: Literal["reply", "backoff"]
    sent_at: dt.datetime
    """When the current attempt was sent (for step latency)."""
    deadline: dt.datetime
    payload: dict[str, Any]
    idempotency_key: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CompletedStep:
    __pydantic_config__ = ConfigDict(extra="forbid")

    step: str
    state: str
    visit: int
    at: dt.datetime
    uncertain: bool = False
    """True when the step timed out or was abandoned: its effect may or may not have happened."""


class Compensation(_Model):
    """Progress of the compensation phase."""

    reason: str
    outcome: Literal["compensated", "aborted"] = "compensated"
    remaining: list[CompletedStep] = Field(default_factory=list)
    """Steps still to compensate, next first (reverse order of completion)."""
    done: list[str] = Field(default_factory=list)
    """Action steps whose compensation replied, in the order they ran."""
    last_attempt: int = 0
    """Attempts used by the compensation that gave up, so that a resume sends newer ones."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    __pydantic_config__ = ConfigDict(extra="forbid")

    at: dt.datetime
    event: str
    state: str | None = None
    step: str | None = None
    attempt: int | None = None
    detail: str | None = None
    by: str = "orchestrator"


class Saga(_Model):
    saga_id: str
    machine: str
    machine_version: int
    status: SagaStatus = SagaStatus.RUNNING
    state: str
    label: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    visits: dict[str, int] = Field(default_factory=dict)
    pending: list[PendingStep] = Field(default_factory=list)
    completed: list[CompletedStep] = Field(default_factory=list)
    compensation: Compensation | None = None
    parallel_failure: str | None = None
    """Set while a parallel state waits for its other branches after one failed."""
    flagged: str | None = None
    """Why an operator is needed; None when not."""
    deadline: dt.datetime | None = None
    """Earliest deadline of the pending steps: when the saga must be woken up."""
    outbox: list[OutgoingCommand] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    history_dropped: int = 0
    unexpected_events: int = 0
    recent_requests: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    """`step:visit` of the steps a participant rejected (they never join `completed`)."""
    version: int = 0
    """Store version; the store increments it on every save."""
    start_digest: str | None = None
    """Digest of the machine and data the saga was started with (`start_digest()`), so that a
    second start with the same id can be told apart: a repeat, or a conflict."""
    traceparent: str | None = None
    """The W3C trace context of the start request, or of the trace the daemon began for the
    saga when it records spans (`orchestrator.tracing`). Every command the saga sends carries
    it, or, while spans are recorded, the context of its step's span in the same trace."""
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None = None

    def with_version(self, version: int) -> Saga:
        """A shallow copy at another store version, sharing every part with this one.

        What a store returns from a save: the caller owns both, and `decide()` forks before it
        changes anything, so nothing needs copying.
        """
        return self.model_copy(update={"version": version})

    def fork(self) -> Saga:
        """A copy whose every mutable part is its own; frozen entries are shared.

        What `decide()` works on, and what a store hands out: much cheaper than a deep copy,
        which would copy the whole history on every message.
        """
        compensation = self.compensation
        if compensation is not None:
            compensation = compensation.model_copy(
                update={"remaining": list(compensation.remaining), "done": list(compensation.done)}
            )
        return self.model_copy(
            update={
                "data": copy_json(self.data),
                "visits": dict(self.visits),
                "pending": [
                    dataclasses.replace(p, payload=copy_json(p.payload)) for p in self.pending
                ],
                "completed": list(self.completed),
                "compensation": compensation,
                "outbox": list(self.outbox),
                "history": list(self.history),
                "recent_requests": list(self.recent_requests),
                "rejected": list(self.rejected),
            }
        )

    def record(self, entry: HistoryEntry) -> None:
        self.history.append(entry)
        overflow = len(self.history) - HISTORY_LIMIT
        if overflow > 0:
            del self.history[:overflow]
            self.history_dropped += overflow

    def pending_step(self, step: str) -> PendingStep | None:
        for pending in self.pending:
            if pending.step == step:
                return pending
        return None

    def refresh_deadline(self) -> None:
        self.deadline = min((p.deadline for p in self.pending), default=None)
