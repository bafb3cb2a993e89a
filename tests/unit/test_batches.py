"""`Batcher`: writes that arrive while one is out go together, each caller with its outcome."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.adapters.mongo.batches import Batcher
from orchestrator.errors import StoreError


class Writer:
    """Records each call's items; holds every call until released, then fails the odd items."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()

    async def write(self, items: list[int]) -> list[BaseException | None]:
        self.calls.append(items)
        await self.release.wait()
        return [ValueError(f"odd {item}") if item % 2 else None for item in items]


@pytest.mark.asyncio
async def test_writes_arriving_while_one_is_out_go_together_each_with_its_own_outcome():
    writer = Writer()
    batcher = Batcher(writer.write, name="test")
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)  # the first goes out alone, at once
    rest = [asyncio.create_task(batcher.submit(item)) for item in range(1, 6)]
    await asyncio.sleep(0)
    writer.release.set()
    outcomes = await asyncio.gather(first, *rest, return_exceptions=True)

    assert writer.calls == [[0], [1, 2, 3, 4, 5]]
    assert batcher.calls == 2
    assert [None if o is None else str(o) for o in outcomes] == [
        None,
        "odd 1",
        None,
        "odd 3",
        None,
        "odd 5",
    ]


@pytest.mark.asyncio
async def test_a_batch_is_never_larger_than_its_limit():
    writer = Writer()
    writer.release.set()
    batcher = Batcher(writer.write, name="test", max_batch=2)
    await asyncio.gather(*(batcher.submit(item) for item in (0, 2, 4, 6, 8)))
    assert [len(call) for call in writer.calls] == [2, 2, 1]


@pytest.mark.asyncio
async def test_a_failed_call_fails_every_item_of_its_batch_and_the_next_batch_goes_on():
    calls: list[list[int]] = []

    async def write(items: list[int]) -> list[BaseException | None]:
        calls.append(items)
        if len(calls) == 1:
            raise ConnectionError("dropped")
        return [None] * len(items)

    batcher = Batcher(write, name="test")
    outcomes = await asyncio.gather(
        *(batcher.submit(item) for item in range(3)), return_exceptions=True
    )
    assert [type(o) for o in outcomes] == [ConnectionError] * 3
    await batcher.submit(7)
    assert calls[-1] == [7]


@pytest.mark.asyncio
async def test_a_cancelled_caller_stops_waiting_and_the_others_get_their_outcomes():
    writer = Writer()
    batcher = Batcher(writer.write, name="test")
    waiting = [asyncio.create_task(batcher.submit(item)) for item in (0, 2, 4)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    writer.release.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "CancelledError", "NoneType"]
    assert writer.calls == [[0, 2, 4]]  # written all the same


@pytest.mark.asyncio
async def test_close_fails_the_writes_in_flight_and_waiting_and_refuses_new_ones():
    writer = Writer()
    batcher = Batcher(writer.write, name="test")
    in_flight = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)
    queued = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    await batcher.close()
    for task in (in_flight, queued):
        with pytest.raises(StoreError, match="closed"):
            await task
    with pytest.raises(StoreError, match="closed"):
        await batcher.submit(4)


@settings(max_examples=200, deadline=None)
@given(
    arrivals=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=40),
    write_yields=st.integers(min_value=0, max_value=3),
    max_batch=st.integers(min_value=1, max_value=8),
    cancelled=st.sets(st.integers(min_value=0, max_value=39)),
    failing=st.sets(st.integers(min_value=0, max_value=39)),
)
def test_any_arrival_pattern_writes_each_item_once_in_order_with_its_own_outcome(
    arrivals, write_yields, max_batch, cancelled, failing
):
    # arrivals[n]: how many turns of the event loop pass before item n is submitted.
    calls: list[list[int]] = []

    async def write(items: list[int]) -> list[BaseException | None]:
        calls.append(items)
        for _ in range(write_yields):
            await asyncio.sleep(0)
        return [ValueError(str(item)) if item in failing else None for item in items]

    async def scenario() -> list[object]:
        batcher = Batcher(write, name="test", max_batch=max_batch)
        tasks = []
        for item, pause in enumerate(arrivals):
            for _ in range(pause):
                await asyncio.sleep(0)
            tasks.append(asyncio.create_task(batcher.submit(item)))
        await asyncio.sleep(0)
        for item in cancelled & set(range(len(tasks))):
            tasks[item].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(scenario())

    written = [item for call in calls for item in call]
    assert written == list(range(len(arrivals)))  # each once, in the order they came
    assert all(1 <= len(call) <= max_batch for call in calls)
    for item, outcome in enumerate(outcomes):
        if isinstance(outcome, asyncio.CancelledError):
            assert item in cancelled
        elif item in failing:
            assert isinstance(outcome, ValueError)
            assert str(outcome) == str(item)
        else:
            assert outcome is None
