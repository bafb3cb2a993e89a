"""A machine's figures for the flow monitor: `MachineStatsReader.stats(name)`.

The counts are read afresh on every call, with the same queries as `sagawire stats` and `sagawire
sagas list`, so the page and the CLI agree. Step latencies read the histories of the last
`sample` sagas, which costs far more than a count: they are kept for `LATENCY_TTL` seconds, a
page polling every second or two reads them a few times a minute.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Final

from orchestrator.adapters.mongo import SagaFilter, latency_ms
from orchestrator.core.saga import SagaStatus
from orchestrator.gateway.schemas import MachineStats, PauseView
from orchestrator.gateway.service import SagaService
from orchestrator.gateway.views import machine_dead_letter_queues

LATENCY_TTL: Final = 10.0
"""Seconds the step latencies of a machine are reused."""
DEFAULT_SAMPLE: Final = 1000
"""Sagas whose histories the latencies come from: `sagawire stats --sample`'s default."""


class MachineStatsReader:
    def __init__(self, service: SagaService) -> None:
        self._service = service
        self._latencies: dict[tuple[str, int], tuple[float, list[float]]] = {}
        self._lock = asyncio.Lock()

    async def stats(
        self, name: str, *, sample: int = DEFAULT_SAMPLE, stuck_after: float = 60.0
    ) -> MachineStats:
        view = await self._service.machine(name)  # its counts are `sagawire stats`'s
        queries = self._service.store.queries
        now = dt.datetime.now(dt.UTC)
        stuck = SagaFilter(machine=name, stuck_before=now - dt.timedelta(seconds=stuck_after))
        latencies = await self._step_latencies(name, sample)
        services = {service for version in view.versions for service in version.services()}
        pause = view.pause
        return MachineStats(
            name=name,
            counts={status.value: view.counts.get(status.value, 0) for status in SagaStatus},
            states=await queries.counts_by_state(name),
            stuck=await queries.count(stuck),
            stuck_after=stuck_after,
            step_latency_ms=latency_ms(latencies),
            steps_sampled=len(latencies),
            dead_letters=await self._service.dead_letter_depths(
                machine_dead_letter_queues(services)
            ),
            paused=None
            if pause is None
            else PauseView(by=pause.by, at=pause.at, reason=pause.reason),
        )

    async def _step_latencies(self, name: str, sample: int) -> list[float]:
        key = (name, sample)
        async with self._lock:
            read_at, values = self._latencies.get(key, (-LATENCY_TTL, []))
            if time.monotonic() - read_at >= LATENCY_TTL:
                found = await self._service.store.queries.step_latencies(
                    sample=sample, machine=name
                )
                values = found.get(name, [])
                self._latencies[key] = (time.monotonic(), values)
            return values
