"""Work a runtime finds in the store, not in its queues: outboxes a crash left unconfirmed, and
due sagas it holds no timer for (after a restart, or sagas other replicas last touched).

`recover()` runs once at start; `sweep_loop()` sweeps for due sagas from then on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

import structlog

from orchestrator.ports import Clock, SagaStore
from orchestrator.runtime.stats import RuntimeStats
from orchestrator.runtime.timers import Timers

log = structlog.get_logger("sagawire.runtime")

SWEEP_SHARE = 0.05
"""The most of its time the sweeper spends sweeping: after a sweep of t seconds, the next one
waits max(`sweep_interval`, t / SWEEP_SHARE). On MongoDB a sweep is an index lookup and the
interval holds; FerretDB v1 reads every saga document for it (about 0.5 ms each), and sweeps
every few seconds would keep such a database busy with little else."""


class Recovery:
    def __init__(
        self,
        store: SagaStore,
        clock: Clock,
        timers: Timers,
        stats: RuntimeStats,
        *,
        batch: int,
        sweep_interval: float,
        rehydrate: Callable[[str], Awaitable[object]],
        wake: Callable[[str], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._timers = timers
        self._stats = stats
        self._batch = batch
        self._sweep_interval = sweep_interval
        self._rehydrate = rehydrate
        """Load a saga into its actor, which publishes the outbox it finds."""
        self._wake = wake
        """Fire a saga's timer."""

    async def sweep(self) -> int:
        """Wake due sagas this process holds no timer for (after a restart, or other replicas')."""
        due = await self._store.due(self._clock.now(), self._batch)
        woken = 0
        for saga_id in due:
            if saga_id not in self._timers:
                self._wake(saga_id)
                woken += 1
        self._stats.sweep_wakeups += woken
        return woken

    async def recover(self, *, saved_until: dt.datetime) -> int:
        """Publish every outbox a crash left unconfirmed, then wake what is due.

        Only sagas last saved by `saved_until` (when this runtime started) are looked at: what
        it saves later, its actors publish themselves. Under load such sagas always hold a few
        outboxes awaiting their mark, and asking until none is left would not end while the
        load lasts.
        """
        recovered = 0
        while True:
            ids = await self._store.with_outbox(self._batch, saved_until=saved_until)
            if not ids:
                break
            await asyncio.gather(*(self._rehydrate(saga_id) for saga_id in ids))
            recovered += len(ids)
            if len(ids) < self._batch:
                break
        self._stats.recovered_outboxes += recovered
        await self.sweep()
        if recovered:
            log.info("outboxes_recovered", sagas=recovered)
        return recovered

    async def sweep_loop(self) -> None:
        interval = self._sweep_interval
        pause = interval
        while True:
            await self._clock.sleep(pause)
            began = self._clock.monotonic()
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep_failed")
            took = self._clock.monotonic() - began
            self._stats.sweep_seconds = took
            spaced = max(interval, took / SWEEP_SHARE)
            if spaced > interval and pause <= interval:
                log.info("sweeps_spaced", sweep_seconds=round(took, 3), next_in=round(spaced, 1))
            pause = spaced
