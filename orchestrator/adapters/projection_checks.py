"""`ProjectionChecks`: look at a saga document again some time after it was saved.

On FerretDB v1 a save is committed by its version claim; the saga document in `sagas` is a
projection written after it, and that write can be overtaken: by a stale write of another
process (FerretDB checks a conditional update's filter on what it read, then writes), or by a
write of a cancelled task that the server runs late. Nothing reads such a saga again until its
deadline passes, and a finished one never, so queries on `sagas` (counts, `sagas list`) would see
the older version. Each check runs `delay` seconds after the last save of its saga; a save made
before the check is due replaces the one it would have checked.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("sagawire.store")

Check = Callable[[str, int], Awaitable[None]]


class ProjectionChecks:
    def __init__(self, check: Check, delay: float) -> None:
        self._check = check
        self.delay = delay
        self._latest: dict[str, int] = {}
        """Saga id -> the newest version saved here that a check will look for."""
        self._due: collections.deque[tuple[float, str]] = collections.deque()
        self._scheduled: collections.Counter[str] = collections.Counter()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Sagas with a check to come."""
        return len(self._latest)

    def add(self, saga_id: str, version: int) -> None:
        loop = asyncio.get_running_loop()
        if self._latest.get(saga_id, 0) < version:
            self._latest[saga_id] = version
        # One delay for all: entries are due in the order they were added.
        self._due.append((loop.time() + self.delay, saga_id))
        self._scheduled[saga_id] += 1
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="sagawire-projection-checks")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._due:
            when, saga_id = self._due[0]
            if when > loop.time():
                await asyncio.sleep(when - loop.time())
            self._due.popleft()
            self._scheduled[saga_id] -= 1
            if self._scheduled[saga_id]:
                continue  # saved again since: that later entry checks the newer version
            del self._scheduled[saga_id]
            version = self._latest.pop(saga_id)
            try:
                await self._check(saga_id, version)
            except Exception:  # one failed check must not stop the others
                log.warning("projection_check_failed", saga_id=saga_id, exc_info=True)

    async def close(self) -> None:
        """Drop the checks to come: a later load repairs what they would have."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._due.clear()
        self._latest.clear()
        self._scheduled.clear()
