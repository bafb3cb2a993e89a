"""The `SagaStore` contract: the memory store and the MongoDB store behave the same.

Every test runs once per backend (the `store` fixture). Sagas are built at millisecond precision,
which is what MongoDB keeps.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from orchestrator.core.saga import HistoryEntry, SagaStatus
from orchestrator.errors import SagaExists, VersionConflict

pytestmark = pytest.mark.asyncio

T0 = dt.datetime(2030, 1, 1, 12, 0, 0, 123_000, tzinfo=dt.UTC)


async def test_insert_then_load_round_trips_every_part(store, make_saga):
    saga = make_saga()
    assert saga.pending
    assert saga.history
    assert saga.outbox
    assert saga.compensation

    inserted = await store.insert(saga)
    loaded = await store.load(saga.saga_id)

    assert inserted.version == 1
    assert loaded is not None
    assert loaded.model_dump() == {**saga.model_dump(), "version": 1}
    assert loaded.deadline is not None
    assert loaded.deadline.utcoffset() == dt.timedelta(0)


async def test_insert_does_not_change_the_callers_saga(store, make_saga):
    saga = make_saga()
    inserted = await store.insert(saga)
    assert saga.version == 0
    assert inserted is not saga


async def test_insert_twice_is_refused(store, make_saga):
    await store.insert(make_saga())
    with pytest.raises(SagaExists) as raised:
        await store.insert(make_saga(data={"other": True}))
    assert raised.value.saga_id == "saga-1"
    loaded = await store.load("saga-1")
    assert loaded is not None
    assert loaded.data == make_saga().data


async def test_load_of_an_unknown_id_is_none(store):
    assert await store.load("no-such-saga") is None


async def test_save_with_the_loaded_version_stores_the_next_version(store, make_saga):
    await store.insert(make_saga())
    loaded = await store.load("saga-1")
    loaded.data["shipped"] = True
    loaded.state = "deliver_order"

    saved = await store.save(loaded)

    assert saved.version == 2
    assert saved is not loaded
    assert loaded.version == 1
    again = await store.load("saga-1")
    assert again.version == 2
    assert again.data["shipped"] is True
    assert again.state == "deliver_order"


async def test_save_with_a_stale_version_conflicts_and_changes_nothing(store, make_saga):
    await store.insert(make_saga())
    stale = await store.load("saga-1")
    fresh = await store.load("saga-1")
    fresh.data["by"] = "fresh"
    await store.save(fresh)

    stale.data["by"] = "stale"
    with pytest.raises(VersionConflict) as raised:
        await store.save(stale)

    assert raised.value.expected == 1
    stored = await store.load("saga-1")
    assert stored.version == 2
    assert stored.data["by"] == "fresh"


async def test_save_of_an_unknown_saga_conflicts(store, make_saga):
    saga = make_saga("never-inserted")
    saga.version = 1
    with pytest.raises(VersionConflict):
        await store.save(saga)
    assert await store.load("never-inserted") is None


async def test_concurrent_saves_from_one_version_have_exactly_one_winner(store, make_saga):
    await store.insert(make_saga())
    for version in range(1, 6):  # several rounds: one lucky interleaving proves nothing
        writers = [await store.load("saga-1") for _ in range(4)]
        for number, writer in enumerate(writers):
            writer.data["winner"] = number

        results = await asyncio.gather(*map(store.save, writers), return_exceptions=True)

        saved = [r for r in results if not isinstance(r, BaseException)]
        conflicts = [r for r in results if isinstance(r, VersionConflict)]
        assert len(saved) == 1, results
        assert len(conflicts) == 3, results
        stored = await store.load("saga-1")
        assert stored.version == version + 1
        assert stored.data["winner"] == saved[0].data["winner"]


async def test_mark_published_with_the_current_version_empties_the_outbox(store, make_saga):
    await store.insert(make_saga())
    await store.mark_published("saga-1", 1)
    await store.flush()
    loaded = await store.load("saga-1")
    assert loaded.outbox == []
    assert loaded.version == 1


async def test_mark_published_with_an_older_version_does_nothing(store, make_saga):
    await store.insert(make_saga())
    loaded = await store.load("saga-1")
    await store.save(loaded)  # version 2, same outbox, not yet published

    await store.mark_published("saga-1", 1)
    await store.flush()

    stored = await store.load("saga-1")
    assert stored.version == 2
    assert len(stored.outbox) == 1


async def test_mark_published_of_an_unknown_saga_does_nothing(store):
    await store.mark_published("no-such-saga", 1)
    await store.flush()
    assert await store.load("no-such-saga") is None


async def test_due_lists_unfinished_sagas_past_their_deadline_earliest_first(store, make_saga):
    second = dt.timedelta(seconds=1)
    for saga in [
        make_saga("late", status=SagaStatus.RUNNING, deadline=T0 - 10 * second),
        make_saga("later", status=SagaStatus.COMPENSATING, deadline=T0 - 20 * second),
        make_saga("exactly-now", status=SagaStatus.RUNNING, deadline=T0),
        make_saga("future", status=SagaStatus.RUNNING, deadline=T0 + second),
        make_saga("no-deadline", status=SagaStatus.RUNNING, deadline=None),
        make_saga("succeeded", status=SagaStatus.SUCCEEDED, deadline=T0 - 30 * second),
        make_saga("failed", status=SagaStatus.FAILED, deadline=T0 - 30 * second),
        make_saga("compensated", status=SagaStatus.COMPENSATED, deadline=T0 - 30 * second),
        make_saga("aborted", status=SagaStatus.ABORTED, deadline=T0 - 30 * second),
    ]:
        await store.insert(saga)

    assert await store.due(T0, 10) == ["later", "late", "exactly-now"]
    assert await store.due(T0, 2) == ["later", "late"]
    assert await store.due(T0 - 15 * second, 10) == ["later"]
    assert await store.due(T0 - 60 * second, 10) == []


async def test_with_outbox_lists_exactly_the_sagas_with_a_pending_outbox(store, make_saga):
    await store.insert(make_saga("a"))
    await store.insert(make_saga("b", outbox=False))
    await store.insert(make_saga("c"))
    await store.insert(make_saga("d"))

    assert sorted(await store.with_outbox(10)) == ["a", "c", "d"]
    assert len(await store.with_outbox(2)) == 2

    # What this store marked is seen at once, flushed or not: recovery relies on it.
    await store.mark_published("c", 1)
    assert sorted(await store.with_outbox(10)) == ["a", "d"]

    # A save that empties the outbox, and one that fills it.
    a = await store.load("a")
    a.outbox = []
    await store.save(a)
    b = await store.load("b")
    b.outbox = list(make_saga("b").outbox)
    await store.save(b)
    assert sorted(await store.with_outbox(10)) == ["b", "d"]


async def test_with_outbox_can_leave_out_the_sagas_saved_after_a_moment(store, make_saga):
    old = make_saga("old")
    old.updated_at = T0 - dt.timedelta(minutes=1)
    await store.insert(old)
    await store.insert(make_saga("now"))  # updated_at T0

    assert sorted(await store.with_outbox(10)) == ["now", "old"]
    assert sorted(await store.with_outbox(10, saved_until=T0)) == ["now", "old"]
    assert await store.with_outbox(10, saved_until=T0 - dt.timedelta(seconds=1)) == ["old"]
    assert await store.with_outbox(10, saved_until=T0 - dt.timedelta(hours=1)) == []


async def test_a_loaded_saga_is_the_callers_own(store, make_saga):
    await store.insert(make_saga())
    first = await store.load("saga-1")
    second = await store.load("saga-1")

    first.data["payment"]["payment_id"] = "changed"
    first.pending[0].payload["payment_id"] = "changed"
    first.history.append(HistoryEntry(at=T0, event="mutated"))
    first.outbox.clear()
    first.compensation.remaining.clear()
    first.visits["prepare_order"] = 9

    assert second.model_dump() == {**make_saga().model_dump(), "version": 1}
    third = await store.load("saga-1")
    assert third.model_dump() == second.model_dump()


async def test_changing_a_saga_after_insert_or_save_does_not_change_the_store(store, make_saga):
    saga = make_saga()
    inserted = await store.insert(saga)
    saga.data["order_id"] = "changed by caller"
    inserted.data["order_id"] = "changed via result"
    loaded = await store.load("saga-1")
    assert loaded.data["order_id"] == "o-1"

    saved = await store.save(loaded)
    loaded.data["order_id"] = "changed after save"
    saved.data["order_id"] = "changed via save result"
    stored = await store.load("saga-1")
    assert stored.data["order_id"] == "o-1"
