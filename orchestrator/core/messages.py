"""What `decide()` reacts to, and what it answers."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Any, Literal

from orchestrator.core.saga import OutgoingCommand, Saga


@dataclasses.dataclass(frozen=True, slots=True)
class StartSaga:
    saga_id: str
    machine: str
    data: dict[str, Any]
    request_id: str | None = None
    traceparent: str | None = None
    """The caller's W3C trace context: every command of the saga carries it."""


@dataclasses.dataclass(frozen=True, slots=True)
class StepReply:
    """A participant's reply to one attempt of one step visit."""

    step: str
    visit: int
    attempt: int
    event: str
    payload: dict[str, Any]
    rejected: bool = False
    message_id: str | None = None
    machine: str | None = None
    """The machine the reply says the saga runs; a mismatch makes the reply invalid."""
    service: str | None = None
    """The service the reply comes from; when given, it must own the step (invariant 10)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TimerFired:
    """Wake the saga: every pending step whose deadline has passed is acted on.

    Carries nothing, so a duplicate or early fire finds nothing due and changes nothing.
    """


OperatorAction = Literal["abort", "retry", "resume"]


@dataclasses.dataclass(frozen=True, slots=True)
class OperatorRequest:
    action: OperatorAction
    operator: str
    request_id: str
    compensate: bool = False
    reason: str | None = None


Message = StartSaga | StepReply | TimerFired | OperatorRequest


class Disposition(StrEnum):
    """What became of the message; the runtime maps it to ack or dead-letter."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    """Seen before (a redelivery, a duplicated reply, a repeated request): nothing changed."""
    STALE = "stale"
    """For an earlier visit, or a step no longer pending: nothing changed."""
    UNEXPECTED = "unexpected"
    """A reply event the current state does not handle: recorded in history, not applied."""
    REFUSED = "refused"
    """An operator request that does not fit the saga's status: nothing changed."""
    INVALID = "invalid"
    """Names a step the machine does not have: nothing changed; dead-letter it."""
    UNSTORABLE = "unstorable"
    """A reply whose body the store cannot hold (`participants_sdk.limits`): the step took
    effect, so the saga compensates it; the reply is dead-lettered so that its body is kept."""


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    saga: Saga
    commands: list[OutgoingCommand]
    disposition: Disposition
    reason: str | None = None

    @property
    def changed(self) -> bool:
        """Whether there is anything to store."""
        return self.disposition in (
            Disposition.APPLIED,
            Disposition.UNEXPECTED,
            Disposition.UNSTORABLE,
        )
