"""Clocks: the system clock, and a manual one that tests move by hand."""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time


class SystemClock:
    def now(self) -> dt.datetime:
        # Milliseconds, as MongoDB stores them: a time read back equals the time written.
        now = dt.datetime.now(dt.UTC)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """Time stands still until `advance()`; sleepers wake when their time has come."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = self._start = start or dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        self._sleepers: list[tuple[dt.datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return (self._now - self._start).total_seconds()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        wake = self._now + dt.timedelta(seconds=seconds)
        heapq.heappush(self._sleepers, (wake, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every sleeper that is due run."""
        self._now += dt.timedelta(seconds=seconds)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        # Give woken tasks a chance to run before the caller goes on.
        for _ in range(5):
            await asyncio.sleep(0)
