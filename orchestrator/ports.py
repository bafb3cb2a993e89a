"""The ports the runtime depends on. Adapters implement them; the runtime knows nothing else.

- `Broker`: the participant SDK's broker (publish with confirms, consume with settling), which
  also declares the topology of every service the machines name.
- `SagaStore`: versioned saga documents with their outbox and deadline; paused machines.
- `Clock`: wall time and sleeping, so that tests can move time by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Protocol

from orchestrator.core.pauses import MachinePause
from orchestrator.core.saga import Saga
from participants_sdk import transport
from participants_sdk.transport import Delivery, DeliveryHandler, Subscription

__all__ = ["Broker", "Clock", "Delivery", "DeliveryHandler", "SagaStore", "Subscription"]


class Broker(transport.Broker, Protocol):
    async def declare_topology(self, services: Iterable[str]) -> None:
        """Declare the exchanges, the control queue, and each service's queues with their DLQs.

        Idempotent: declaring what exists already changes nothing.
        """


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back: for measuring how long work took."""

    async def sleep(self, seconds: float) -> None: ...


class SagaStore(Protocol):
    async def load(self, saga_id: str) -> Saga | None: ...

    async def insert(self, saga: Saga) -> Saga:
        """Store a new saga as version 1 and return it; `SagaExists` when the id is taken."""

    async def save(self, saga: Saga) -> Saga:
        """Store `saga` if the stored version still equals `saga.version`; return it with the
        new version. `VersionConflict` when another writer saved first."""

    async def mark_published(self, saga_id: str, version: int) -> None:
        """The outbox of this version was confirmed by the broker: empty it.

        Only applies while the stored version is still `version`; may be batched.
        """

    async def due(self, now: dt.datetime, limit: int) -> list[str]:
        """Ids of unfinished sagas whose deadline is at or before `now`, earliest first."""

    async def with_outbox(self, limit: int, *, saved_until: dt.datetime | None = None) -> list[str]:
        """Ids of sagas whose outbox holds commands not known to be published; with
        `saved_until`, only those last saved (`updated_at`) at or before that moment."""

    async def paused_machines(self) -> dict[str, MachinePause]:
        """The machines an operator paused, by name."""
