"""`MarkQueue`: which marks a background round writes, and how many in one call."""

from __future__ import annotations

import types

import pytest

from orchestrator.adapters.mongo import marks
from orchestrator.adapters.mongo.marks import MarkQueue

pytestmark = pytest.mark.asyncio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(marks, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(marks, "MARK_BATCH", 3)
    monkeypatch.setattr(marks, "MARK_QUEUE_LIMIT", 5)
    return clock


class Writer:
    def __init__(self) -> None:
        self.calls: list[dict[str, int]] = []

    async def write_marks(self, written: dict[str, int]) -> None:
        self.calls.append(dict(written))

    async def shrink_claims(self, keys: set[str]) -> None:
        pass


async def queue_of(writer: Writer) -> MarkQueue:
    queue = MarkQueue(writer.write_marks, writer.shrink_claims)
    queue._flusher = types.SimpleNamespace()  # type: ignore[assignment]  # no background task
    return queue


async def test_due_marks_go_out_oldest_first_a_batch_per_call(clock: Clock) -> None:
    writer = Writer()
    queue = await queue_of(writer)
    for number in range(4):
        queue.add(f"saga-{number}", 1)
    clock.now += 1
    queue.add("young", 1)

    await queue.flush(due_only=True)  # nothing has waited MARK_DELAY yet
    clock.now += marks.MARK_DELAY - 1
    await queue.flush(due_only=True)
    await queue.flush(due_only=True)

    assert writer.calls == [{"saga-0": 1, "saga-1": 1, "saga-2": 1}, {"saga-3": 1}]
    assert list(queue.queued) == ["young"]


async def test_a_queue_over_its_limit_writes_its_oldest_before_they_are_due(clock: Clock) -> None:
    writer = Writer()
    queue = await queue_of(writer)
    for number in range(7):
        queue.add(f"saga-{number}", 1)

    await queue.flush(due_only=True)
    await queue.flush(due_only=True)

    assert writer.calls == [{"saga-0": 1, "saga-1": 1}]  # down to the limit, no further
    assert len(queue) == marks.MARK_QUEUE_LIMIT


async def test_a_full_flush_writes_every_mark_due_or_not(clock: Clock) -> None:
    writer = Writer()
    queue = await queue_of(writer)
    for number in range(4):
        queue.add(f"saga-{number}", 2)

    await queue.flush()

    assert writer.calls == [{f"saga-{number}": 2 for number in range(4)}]
    assert len(queue) == 0
