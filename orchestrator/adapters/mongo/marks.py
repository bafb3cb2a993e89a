"""`MarkQueue`: outbox marks written late, in batches, and most of them never.

A mark (`mark_published`) clears an outbox once the broker has confirmed its commands. It waits
`MARK_DELAY` seconds first: a save of a newer version of the saga in the meantime makes it moot
(that version's document holds only the commands not yet published), and it is dropped unwritten.
Under load most steps are answered well within two seconds, so most marks are never written; the
others go out together in one unordered write. A mark lost in a crash only means that outbox is
published again on recovery, which participants dedupe by idempotency key. The same background
task shrinks superseded version claims on FerretDB v1 (see `ferretdb`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Final, NamedTuple

import structlog

from orchestrator.errors import StoreError

log = structlog.get_logger("sagawire.store")

MARK_DELAY: Final = 2.0
"""Seconds a `mark_published` waits before it is written."""
MARK_INTERVAL: Final = 0.02
"""Seconds a cleanup of old version claims may wait to be written together with others."""
MARK_BATCH: Final = 500
"""Marks written in one call at most."""
MARK_QUEUE_LIMIT: Final = 20_000
"""Queued marks beyond which the oldest are written before they are due: a bound on the memory
the queue holds and on the outboxes a crash leaves to publish again."""

WriteMarks = Callable[[dict[str, int]], Awaitable[None]]
"""Writes marks (saga id -> version); raises `StoreError` when it cannot."""
ShrinkClaims = Callable[[set[str]], Awaitable[None]]
"""Shrinks the version claims with these keys; raises `StoreError` when it cannot."""


class QueuedMark(NamedTuple):
    version: int
    since: float
    """When a mark of this saga was first queued (monotonic): it keeps its place in the queue
    when a newer version replaces it."""


class MarkQueue:
    """Marks and claim clean-ups waiting to be written by a background task, which writes the
    marks once due, up to `MARK_BATCH` a call, and the clean-ups every `MARK_INTERVAL` seconds."""

    def __init__(self, write_marks: WriteMarks, shrink_claims: ShrinkClaims) -> None:
        self._write_marks = write_marks
        self._shrink_claims = shrink_claims
        self.queued: dict[str, QueuedMark] = {}
        """The marks waiting to be written, by saga id, oldest first."""
        self.dropped = 0
        """Marks made moot by a newer save before they were due, never written."""
        self._writing: dict[str, int] = {}
        self._old_claims: set[str] = set()
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.queued)

    def add(self, saga_id: str, version: int) -> None:
        self._queue(saga_id, version, time.monotonic())
        self._wake_flusher()

    def add_old_claim(self, key: str) -> None:
        """Queue the shrinking of a claim a newer one superseded."""
        self._old_claims.add(key)
        self._wake_flusher()

    def drop(self, saga_id: str, saved: int) -> None:
        """A save of version `saved` makes a queued mark of an older version moot."""
        queued = self.queued.get(saga_id)
        if queued is not None and queued.version < saved:
            del self.queued[saga_id]
            self.dropped += 1

    def holds(self, saga_id: str, version: int) -> bool:
        """Whether a mark of exactly this version is queued or being written: a load reads it
        as written (read your own writes)."""
        queued = self.queued.get(saga_id)
        return version in (
            queued.version if queued is not None else None,
            self._writing.get(saga_id),
        )

    async def flush(self, *, due_only: bool = False) -> None:
        """Write the queued marks (every one, or with `due_only` those that waited `MARK_DELAY`)
        and claim clean-ups now; `StoreError` (queue kept) on failure."""
        async with self._flush_lock:
            marks = self._take(due_only=due_only)
            old_claims, self._old_claims = self._old_claims, set()
            self._writing = marks
            try:
                if marks:
                    await self._write_marks(marks)
                    marks = {}
                if old_claims:
                    await self._shrink_claims(old_claims)
            except BaseException:
                # Failed, or cancelled by close(): keep what is unwritten for the next try. Doing a
                # mark twice is harmless: each one is guarded by its version.
                now = time.monotonic()
                for saga_id, version in marks.items():
                    self._queue(saga_id, version, now)
                self._old_claims |= old_claims
                self._wake.set()
                raise
            finally:
                self._writing = {}

    async def close(self) -> None:
        """Stop the background task; call once the queue is flushed, so that it is idle."""
        if self._flusher is not None:
            # Idle now (nothing is queued), so cancelling it interrupts no database call.
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    def _queue(self, saga_id: str, version: int, now: float) -> None:
        """Queue a mark of `version` unless one as new is queued. A newer version keeps the
        place and the time of the one it replaces, so the queue stays oldest first."""
        queued = self.queued.get(saga_id)
        if queued is None:
            self.queued[saga_id] = QueuedMark(version, now)
        elif queued.version < version:
            self.queued[saga_id] = queued._replace(version=version)

    def _wake_flusher(self) -> None:
        self._wake.set()
        if len(self.queued) > MARK_QUEUE_LIMIT:
            self._full.set()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name="sagawire-mongo-marks"
            )

    def _take(self, *, due_only: bool) -> dict[str, int]:
        """Remove and return the queued marks to write now: every one, or the oldest that are
        due or over `MARK_QUEUE_LIMIT`, `MARK_BATCH` at most."""
        if not due_only:
            queued, self.queued = self.queued, {}
            return {saga_id: mark.version for saga_id, mark in queued.items()}
        cutoff = time.monotonic() - MARK_DELAY
        over = len(self.queued) - MARK_QUEUE_LIMIT
        taken: dict[str, int] = {}
        for saga_id, mark in self.queued.items():
            if len(taken) == MARK_BATCH or (mark.since > cutoff and len(taken) >= over):
                break
            taken[saga_id] = mark.version
        for saga_id in taken:
            del self.queued[saga_id]
        return taken

    def _next_flush_in(self) -> float | None:
        """Seconds until something queued is due to be written; None when nothing is queued."""
        if len(self.queued) > MARK_QUEUE_LIMIT:
            return 0.0
        waits = []
        if self._old_claims:
            waits.append(MARK_INTERVAL)
        if self.queued:
            oldest = next(iter(self.queued.values()))
            waits.append(max(oldest.since + MARK_DELAY - time.monotonic(), 0.0))
        return min(waits, default=None)

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            wait = self._next_flush_in()
            if wait is None:
                continue
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._full.wait()
            self._full.clear()
            try:
                await self.flush(due_only=True)
                if self.queued or self._old_claims:
                    self._wake.set()  # not due yet: come back when they are
            except StoreError as exc:
                # Kept for the next round; meanwhile at worst an outbox is published twice.
                log.warning("mark_published_failed", marks=len(self.queued), error=str(exc))
                await asyncio.sleep(MARK_INTERVAL)
            except Exception:
                # This task must outlive a bug in one round, or marks would pile up unwritten.
                log.exception("mark_published_failed", marks=len(self.queued))
                await asyncio.sleep(MARK_INTERVAL)
