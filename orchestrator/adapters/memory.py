"""In-process adapters: the memory broker (from the SDK) and a versioned saga store.

The store keeps its own deep copies, so a caller holding a saga cannot change what is stored,
and it checks versions exactly as the MongoDB store does.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from orchestrator.core.pauses import MachinePause
from orchestrator.core.saga import Saga
from orchestrator.errors import SagaExists, StoreError, VersionConflict
from participants_sdk.memory import MemoryBroker

__all__ = ["MemoryBroker", "MemorySagaStore"]


class MemorySagaStore:
    def __init__(self) -> None:
        self._sagas: dict[str, Saga] = {}
        self._pauses: dict[str, MachinePause] = {}
        self.writes = 0
        self.available = True
        """Set to False to make every call fail, as an unreachable database would."""
        self._lock = asyncio.Lock()

    def _check(self) -> None:
        if not self.available:
            raise StoreError("memory store is unavailable")

    async def load(self, saga_id: str) -> Saga | None:
        self._check()
        saga = self._sagas.get(saga_id)
        return None if saga is None else saga.fork()

    async def insert(self, saga: Saga) -> Saga:
        self._check()
        async with self._lock:
            if saga.saga_id in self._sagas:
                raise SagaExists(saga.saga_id)
            kept = saga.fork()
            kept.version = 1
            self._sagas[saga.saga_id] = kept
            self.writes += 1
            return saga.with_version(1)

    async def save(self, saga: Saga) -> Saga:
        self._check()
        async with self._lock:
            current = self._sagas.get(saga.saga_id)
            if current is None or current.version != saga.version:
                raise VersionConflict(saga.saga_id, saga.version)
            kept = saga.fork()
            kept.version = saga.version + 1
            self._sagas[saga.saga_id] = kept
            self.writes += 1
            return saga.with_version(kept.version)

    async def mark_published(self, saga_id: str, version: int) -> None:
        self._check()
        current = self._sagas.get(saga_id)
        if current is not None and current.version == version:
            current.outbox = []

    async def due(self, now: dt.datetime, limit: int) -> list[str]:
        self._check()
        due = [
            s
            for s in self._sagas.values()
            if s.deadline is not None and s.deadline <= now and not s.status.finished
        ]
        due.sort(key=lambda s: s.deadline or now)
        return [s.saga_id for s in due[:limit]]

    async def with_outbox(self, limit: int, *, saved_until: dt.datetime | None = None) -> list[str]:
        self._check()
        return [
            s.saga_id
            for s in self._sagas.values()
            if s.outbox and (saved_until is None or s.updated_at <= saved_until)
        ][:limit]

    async def pause_machine(self, machine: str, *, by: str, reason: str | None = None) -> None:
        self._check()
        self._pauses[machine] = MachinePause(machine, by, dt.datetime.now(dt.UTC), reason)

    async def resume_machine(self, machine: str) -> bool:
        self._check()
        return self._pauses.pop(machine, None) is not None

    async def paused_machines(self) -> dict[str, MachinePause]:
        self._check()
        return dict(self._pauses)

    async def flush(self) -> None:
        """Nothing is queued here; for parity with the MongoDB store's batched marks."""

    async def close(self) -> None:
        """Nothing to release; for parity with the MongoDB store."""

    # Read helpers for tests, the demo and the CLI.

    def all(self) -> list[Saga]:
        return [s.fork() for s in self._sagas.values()]

    def __len__(self) -> int:
        return len(self._sagas)
