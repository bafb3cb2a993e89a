"""In-process timers for the deadlines of sagas this process has seen.

Deadlines live in the store; these timers only wake sagas on time. After a restart, or for a
saga another replica touched, the sweeper finds due sagas in the store instead. A timer that
fires late, twice or for nothing is harmless: `decide()` acts only on what is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
from collections.abc import Callable
from typing import Any

import structlog

from orchestrator.ports import Clock

log = structlog.get_logger("sagawire.timers")


class Timers:
    def __init__(self, clock: Clock, fire: Callable[[str], None]) -> None:
        self._clock = clock
        self._fire = fire
        self._heap: list[tuple[dt.datetime, str]] = []
        self._deadlines: dict[str, dt.datetime] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._deadlines)

    def __contains__(self, saga_id: object) -> bool:
        return saga_id in self._deadlines

    def set(self, saga_id: str, deadline: dt.datetime | None) -> None:
        """Arm the saga's timer for `deadline`, replacing any earlier one; None disarms it."""
        if deadline is None:
            self._deadlines.pop(saga_id, None)
            return
        if self._deadlines.get(saga_id) == deadline:
            return
        self._deadlines[saga_id] = deadline
        heapq.heappush(self._heap, (deadline, saga_id))
        if self._heap[0] == (deadline, saga_id):
            self._changed.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sagawire-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _pop_due(self, now: dt.datetime) -> list[str]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            deadline, saga_id = heapq.heappop(self._heap)
            if self._deadlines.get(saga_id) == deadline:  # else replaced or disarmed since
                del self._deadlines[saga_id]
                due.append(saga_id)
        return due

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            for saga_id in self._pop_due(self._clock.now()):
                try:
                    self._fire(saga_id)
                except Exception:
                    log.exception("timer_fire_failed", saga_id=saga_id)
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._changed.wait())]
            if self._heap:
                delay = (self._heap[0][0] - self._clock.now()).total_seconds()
                waits.append(asyncio.ensure_future(self._clock.sleep(delay)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
