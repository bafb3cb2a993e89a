"""What only the MongoDB store has: definition snapshots, connecting, batching, indexes, claims."""

from __future__ import annotations

import asyncio
import decimal
import time
from pathlib import Path

import pytest
from pymongo.errors import AutoReconnect

from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.adapters.mongo.documents import SAGA_INDEXES, to_document
from orchestrator.adapters.mongo.ferretdb import is_ferretdb_v1
from orchestrator.adapters.mongo.marks import MARK_DELAY, QueuedMark
from orchestrator.core.conditions import ConditionTypeError
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.machines import MachineRegistry, load_machines
from orchestrator.core.saga import SagaStatus
from orchestrator.errors import (
    ConfigurationError,
    DefinitionChanged,
    DefinitionError,
    StoreError,
    VersionConflict,
)

MACHINES = Path(__file__).resolve().parents[2] / "machines"

pytestmark = [pytest.mark.mongo, pytest.mark.asyncio]


@pytest.fixture(scope="module")
def registry() -> MachineRegistry:
    return load_machines(MACHINES)


async def snapshots(store: MongoSagaStore) -> dict[str, dict]:
    return {doc["_id"]: doc async for doc in store.database["machines"].find({})}


# -- machine definition snapshots --------------------------------------------------------------


async def test_register_definitions_stores_a_snapshot_per_version(mongo_store, registry):
    await mongo_store.register_definitions(registry)

    stored = await snapshots(mongo_store)
    assert set(stored) == {f"{d.machine}:v{d.version}" for d in registry}
    for definition in registry:
        doc = stored[f"{definition.machine}:v{definition.version}"]
        assert doc["machine"] == definition.machine
        assert doc["version"] == definition.version
        assert doc["hash"] == definition.content_hash()
        assert doc["definition"] == definition.snapshot()
        assert doc["source"] == registry.source(*definition.key)
        assert doc["first_loaded_at"].tzinfo is not None


async def test_register_definitions_again_changes_nothing(mongo_store, registry):
    await mongo_store.register_definitions(registry)
    before = await snapshots(mongo_store)
    await mongo_store.register_definitions(registry)
    assert await snapshots(mongo_store) == before


async def test_a_changed_definition_under_the_same_version_is_refused(mongo_store, registry):
    await mongo_store.register_definitions(registry)
    original = registry.latest("order")
    changed = MachineDefinition.model_validate(
        {**original.snapshot(), "description": "someone edited this in place"}
    )
    edited = MachineRegistry([changed], sources={changed.key: "machines/order-edited.yaml"})

    with pytest.raises(DefinitionChanged) as raised:
        await mongo_store.register_definitions(edited)

    [problem] = raised.value.problems
    assert problem.startswith(
        f"machines/order-edited.yaml: machine 'order' v{original.version} changed since it was "
        "first loaded"
    )
    assert f"stored hash {original.content_hash()[:12]}" in problem
    assert f"now {changed.content_hash()[:12]}" in problem
    assert "give the change a new version" in problem
    stored = await snapshots(mongo_store)
    assert stored[f"order:v{original.version}"]["hash"] == original.content_hash()


async def test_stored_definitions_round_trip(mongo_store, registry):
    await mongo_store.register_definitions(registry)

    loaded = await mongo_store.stored_definitions()

    assert [d.key for d in loaded] == sorted(d.key for d in registry)
    for definition in loaded:
        original = registry.get(*definition.key)
        assert definition == original
        assert definition.content_hash() == original.content_hash()


async def test_stored_definitions_keep_versions_gone_from_the_files(mongo_store, registry):
    await mongo_store.register_definitions(registry)
    await mongo_store.register_definitions(MachineRegistry([]))
    assert len(await mongo_store.stored_definitions()) == len(registry)


async def test_a_stored_version_written_before_a_check_still_loads(mongo_store, registry):
    """A snapshot stored before gt/gte/lt/lte refused string literals keeps loading (sagas run
    on it); its comparison fails the saga at run time instead (invariant 13)."""
    await mongo_store.register_definitions(registry)
    order = registry.latest("order").model_dump(mode="json", by_alias=True, exclude_none=True)
    order["version"] = 99
    order["states"]["check"] = {
        "choice": [{"when": {"path": "$.total", "gt": "5000"}, "goto": "execute_payment"}],
        "default": "execute_payment",
    }
    order["initial"] = "check"
    await mongo_store.database["machines"].insert_one(
        {"_id": "order:v99", "machine": "order", "version": 99, "definition": order}
    )

    loaded = {d.key: d for d in await mongo_store.stored_definitions()}

    check = loaded["order", 99].states["check"]
    with pytest.raises(ConditionTypeError, match=r"\$.total gt '5000' compares"):
        check.choice[0].when.evaluate({"total": 9000})  # type: ignore[union-attr]


async def test_a_stored_snapshot_that_cannot_load_names_itself(mongo_store):
    await mongo_store.database["machines"].insert_one(
        {"_id": "order:v7", "machine": "order", "version": 7, "definition": {"machine": "order"}}
    )
    with pytest.raises(DefinitionError, match="stored machine snapshot 'order:v7' no longer loads"):
        await mongo_store.stored_definitions()


# -- connecting --------------------------------------------------------------------------------


async def test_connect_to_a_closed_port_fails_fast_without_the_password():
    url = "mongodb://user:secret@127.0.0.1:1/"
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as raised:
        await MongoSagaStore.connect(url, timeout=1.0)
    message = str(raised.value)
    assert time.monotonic() - started < 3
    assert "secret" not in message
    assert message.startswith("cannot reach MongoDB at mongodb://user:***@127.0.0.1:1/: ")
    assert "see `make services`" in message
    assert "\n" not in message


async def test_connect_rejects_an_invalid_url_without_the_password():
    with pytest.raises(ConfigurationError) as raised:
        await MongoSagaStore.connect("mongodb://user:secret@127.0.0.1:notaport/")
    assert "secret" not in str(raised.value)
    assert "invalid MongoDB URL mongodb://user:***@" in str(raised.value)


async def test_the_database_comes_from_the_argument_the_url_or_the_default(mongodb_url):
    base = mongodb_url.split("?")[0].rstrip("/")
    for url, database, expected in [
        (f"{base}/", None, "sagawire"),
        (f"{base}/from_url", None, "from_url"),
        (f"{base}/from_url", "given", "given"),
    ]:
        store = await MongoSagaStore.connect(url, database)
        assert store.database.name == expected
        await store.close()


async def test_connect_uses_version_claims_exactly_on_ferretdb_v1(mongo_store):
    build = await mongo_store.client.admin.command("buildInfo")
    ferretdb_v1 = str(build.get("ferretdbVersion", "")).startswith("v1.")
    assert mongo_store.version_claims is ferretdb_v1


# -- writes and batching -----------------------------------------------------------------------


async def test_a_save_is_one_write(plain_mongo_store, make_saga):
    store = plain_mongo_store
    saga = await store.insert(make_saga())
    writes, round_trips = store.writes, store.round_trips
    saga = await store.save(saga)
    assert (store.writes - writes, store.round_trips - round_trips) == (1, 1)
    assert (await store.load("saga-1")).version == 2


async def test_with_version_claims_a_save_is_two_writes(claims_mongo_store, make_saga):
    store = claims_mongo_store
    saga = await store.insert(make_saga())
    writes, round_trips = store.writes, store.round_trips
    await store.save(saga)
    assert (store.writes - writes, store.round_trips - round_trips) == (2, 2)


async def test_the_single_write_save_still_checks_the_version(plain_mongo_store, make_saga):
    store = plain_mongo_store
    stale = await store.insert(make_saga())
    await store.save(await store.load("saga-1"))
    with pytest.raises(VersionConflict):
        await store.save(stale)
    assert (await store.load("saga-1")).version == 2


async def test_marks_are_written_in_one_round_trip(plain_mongo_store, make_saga):
    store = plain_mongo_store
    for number in range(20):
        await store.insert(make_saga(f"saga-{number}"))
    writes, round_trips = store.writes, store.round_trips

    for number in range(20):
        await store.mark_published(f"saga-{number}", 1)
    await store.flush()

    assert (store.writes - writes, store.round_trips - round_trips) == (20, 1)
    assert await store.with_outbox(100) == []


async def test_with_version_claims_a_mark_never_puts_an_older_version_back(
    claims_mongo_store, make_saga
):
    # FerretDB v1 writes a conditional update as the document it read: unordered, a mark of
    # version 1 racing the save of version 2 would write version 1 again.
    store = claims_mongo_store
    sagas = [await store.insert(make_saga(f"saga-{number}")) for number in range(40)]
    for saga in sagas:
        await store.mark_published(saga.saga_id, 1)

    await asyncio.gather(store.flush(), *(store.save(saga) for saga in sagas))

    documents = store.database["sagas"].find({}, {"version": 1})
    assert {document["version"] async for document in documents} == {2}
    assert len(store._claims.writing) == 0  # every per-saga lock released and dropped


async def test_marks_are_written_in_the_background(mongo_store, make_saga):
    await mongo_store.insert(make_saga())
    await mongo_store.mark_published("saga-1", 1)
    raw = mongo_store.database["sagas"]
    deadline = time.monotonic() + 5  # generous: a shared test server can be slow
    for _ in range(500):
        if not (await raw.find_one({"_id": "saga-1"}))["outbox"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    stored = await raw.find_one({"_id": "saga-1"})
    assert stored["outbox"] == []
    assert "outbox_pending" not in stored


async def test_a_mark_is_written_only_after_its_delay(mongo_store, make_saga):
    await mongo_store.insert(make_saga())
    queued = time.monotonic()
    await mongo_store.mark_published("saga-1", 1)
    raw = mongo_store.database["sagas"]
    while (await raw.find_one({"_id": "saga-1"}))["outbox"]:
        assert time.monotonic() - queued < MARK_DELAY + 5, "the mark was never written"
        await asyncio.sleep(0.01)
    assert time.monotonic() - queued >= MARK_DELAY


async def test_a_newer_save_drops_the_queued_mark_unwritten(mongo_store, make_saga):
    stored = await mongo_store.insert(make_saga())
    await mongo_store.mark_published("saga-1", 1)
    stored.outbox = []  # published: the next version holds only newer commands
    await mongo_store.save(stored)
    writes = mongo_store.writes

    await mongo_store.flush()

    assert mongo_store.marks_dropped == 1
    assert mongo_store.writes == writes
    assert (await mongo_store.load("saga-1")).version == 2


async def test_a_newer_mark_keeps_the_place_and_time_of_the_one_it_replaces(mongo_store):
    # The queue is oldest first, and a flush of the due marks stops at the first one not due:
    # a saga marked again must not move to the back, or it could wait there for good.
    await mongo_store.mark_published("saga-1", 1)
    await mongo_store.mark_published("saga-2", 1)
    first = mongo_store._marks.queued["saga-1"].since
    await mongo_store.mark_published("saga-1", 2)
    await mongo_store.mark_published("saga-2", 1)  # not newer: nothing changes

    assert list(mongo_store._marks.queued) == ["saga-1", "saga-2"]
    assert mongo_store._marks.queued["saga-1"] == QueuedMark(2, first)


def fail_once(monkeypatch, collection, method: str) -> None:
    """Make the collection's `method` fail once, as a dropped connection would.

    Patched on the collection object itself: the store and its version claims share it.
    """
    real = getattr(collection, method)
    failed = False

    async def once(*args, **kwargs):
        nonlocal failed
        if failed:
            return await real(*args, **kwargs)
        failed = True
        raise AutoReconnect("connection dropped")

    monkeypatch.setattr(collection, method, once)


async def test_a_failed_flush_keeps_the_marks_for_the_next_one(mongo_store, make_saga, monkeypatch):
    await mongo_store.insert(make_saga())
    fail_once(monkeypatch, mongo_store._sagas, "bulk_write")

    await mongo_store.mark_published("saga-1", 1)
    with pytest.raises(StoreError, match="connection dropped"):
        await mongo_store.flush()
    # Still read as published by this store meanwhile.
    assert (await mongo_store.load("saga-1")).outbox == []

    await mongo_store.flush()
    stored = await mongo_store.database["sagas"].find_one({"_id": "saga-1"})
    assert stored["outbox"] == []


async def test_close_writes_the_queued_marks_and_is_idempotent(mongodb_url, mongo_store, make_saga):
    store = await MongoSagaStore.connect(mongodb_url, mongo_store.database.name)
    await store.insert(make_saga())
    await store.mark_published("saga-1", 1)

    await store.close()
    await store.close()

    with pytest.raises(StoreError, match="closed"):
        await store.mark_published("saga-1", 1)
    assert (await mongo_store.load("saga-1")).outbox == []


async def test_ensure_indexes_creates_every_index_once(mongo_store):
    mongo_store.secondary_indexes = True  # as on MongoDB, whatever the server
    await mongo_store.ensure_indexes()
    await mongo_store.ensure_indexes()  # again: no error, no duplicates

    indexes = {i["name"]: i async for i in await mongo_store.database["sagas"].list_indexes()}

    assert set(indexes) == {"_id_"} | {name for name, _, _ in SAGA_INDEXES}
    assert list(indexes["status_deadline"]["key"].items()) == [("status", 1), ("deadline", 1)]


async def test_ensure_indexes_creates_the_claims_collection_before_any_save(claims_mongo_store):
    # FerretDB v1 can deadlock creating a collection under load: never leave it to a first claim.
    names = await claims_mongo_store.database.list_collection_names()

    assert "saga_versions" in names
    await claims_mongo_store.ensure_indexes()  # again: it exists, no error


async def test_counts_by_machine_and_status(mongo_store, make_saga):
    from orchestrator.core.saga import SagaStatus  # noqa: PLC0415

    await mongo_store.insert(make_saga("a", status=SagaStatus.RUNNING))
    await mongo_store.insert(make_saga("b", status=SagaStatus.RUNNING))
    other = make_saga("c", status=SagaStatus.FAILED)
    other.machine = "other"
    await mongo_store.insert(other)

    counts = await mongo_store.queries.counts_by_machine()
    assert counts["order"]["running"] == 2
    assert counts["order"]["succeeded"] == 0
    assert counts["other"] == {
        status.value: int(status is SagaStatus.FAILED) for status in SagaStatus
    }


async def test_paused_machines_round_trip(mongo_store):
    assert await mongo_store.paused_machines() == {}
    await mongo_store.pause_machine("order", by="alice", reason="stock outage")
    await mongo_store.pause_machine("order", by="bob")  # pausing again replaces the record
    [pause] = (await mongo_store.paused_machines()).values()
    assert (pause.machine, pause.by, pause.reason) == ("order", "bob", None)
    assert "machine 'order' is paused (by bob at" in pause.describe()
    assert await mongo_store.resume_machine("order") is True
    assert await mongo_store.resume_machine("order") is False
    assert await mongo_store.paused_machines() == {}


async def test_a_value_bson_cannot_hold_is_a_store_error(mongo_store, make_saga):
    with pytest.raises(StoreError, match="cannot insert saga 'saga-1'"):
        await mongo_store.insert(make_saga(data={"amount": decimal.Decimal("1.5")}))
    assert await mongo_store.load("saga-1") is None


# -- version claims ----------------------------------------------------------------------------


async def test_a_stale_writer_cannot_claim_a_cleaned_up_version(claims_mongo_store, make_saga):
    await claims_mongo_store.insert(make_saga())
    stale = await claims_mongo_store.load("saga-1")
    for _ in range(3):
        await claims_mongo_store.save(await claims_mongo_store.load("saga-1"))
    await claims_mongo_store.flush()  # older claims shrunk to their key

    with pytest.raises(VersionConflict):
        await claims_mongo_store.save(stale)
    assert (await claims_mongo_store.load("saga-1")).version == 4
    claims = claims_mongo_store.database["saga_versions"]
    full = [doc["version"] async for doc in claims.find({"saga": {"$exists": True}})]
    assert full == [4]


async def test_a_save_whose_saga_write_was_lost_is_repaired_on_load(
    claims_mongo_store, make_saga, monkeypatch
):
    saga = await claims_mongo_store.insert(make_saga())
    saga.data["step"] = "two"
    sagas = claims_mongo_store._sagas
    fail_once(monkeypatch, sagas, "bulk_write")

    with pytest.raises(StoreError):
        await claims_mongo_store.save(saga)  # the claim was written, the saga document was not

    assert (await sagas.find_one({"_id": "saga-1"}))["version"] == 1
    loaded = await claims_mongo_store.load("saga-1")
    assert loaded.version == 2
    assert loaded.data["step"] == "two"
    assert (await sagas.find_one({"_id": "saga-1"}))["version"] == 2


async def test_claims_hold_the_saga_as_bson_and_older_embedded_ones_still_load(
    claims_mongo_store, make_saga
):
    store = claims_mongo_store
    saga = await store.insert(make_saga())
    saved = await store.save(saga)
    claims = store.database["saga_versions"]
    assert isinstance((await claims.find_one({"_id": "saga-1#2"}))["saga"], bytes)

    # A claim written by an earlier version of the store embeds the document; the saga document
    # is behind it, as after a lost write.
    embedded = to_document(saved.with_version(3))
    embedded["data"] = {"step": "embedded"}
    older_claim = {"_id": "saga-1#3", "saga_id": "saga-1", "version": 3, "saga": embedded}
    await claims.insert_one(older_claim)

    loaded = await store.load("saga-1")
    assert (loaded.version, loaded.data) == (3, {"step": "embedded"})
    assert (await store.database["sagas"].find_one({"_id": "saga-1"}))["version"] == 3


async def wait_for_version(raw, saga_id: str, version: int, within: float) -> int:
    """The saga document's version once it is `version`, or the last one seen after `within` s."""
    deadline = time.monotonic() + within
    while True:
        found = (await raw.find_one({"_id": saga_id}, {"version": 1}))["version"]
        if found == version or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.02)


async def test_a_finished_saga_overwritten_by_a_stale_write_is_repaired_without_a_load(
    claims_mongo_store, make_saga
):
    # Another process's late write of an older version lands after the finished save: nothing
    # loads a finished saga again, so without a check its document would stay behind for good.
    store = claims_mongo_store
    running_checks, finished_checks = store.projection_checks
    running_checks.delay, finished_checks.delay = 0.2, 0.6
    await store.insert(make_saga())
    running = await store.save(await store.load("saga-1"))
    assert (len(running_checks), len(finished_checks)) == (1, 0)
    finished = running.fork()
    finished.status = SagaStatus.SUCCEEDED
    await store.save(finished)
    # The finished save's check replaces the running one's.
    assert (len(running_checks), len(finished_checks)) == (0, 1)
    raw = store.database["sagas"]
    older = await raw.find_one({"_id": "saga-1"})
    older.update(version=2, status="compensating")
    await raw.replace_one({"_id": "saga-1"}, older)

    assert await wait_for_version(raw, "saga-1", 3, within=5.0) == 3
    assert (await raw.find_one({"_id": "saga-1"}))["status"] == "succeeded"
    assert store.projection_repairs == 1
    assert (len(running_checks), len(finished_checks)) == (0, 0)


async def test_a_lost_saga_write_is_repaired_by_the_check_after_the_save(
    claims_mongo_store, make_saga, monkeypatch
):
    store = claims_mongo_store
    store.projection_checks[0].delay = 0.2
    saga = await store.insert(make_saga())
    sagas = store._sagas
    fail_once(monkeypatch, sagas, "bulk_write")
    with pytest.raises(StoreError):
        await store.save(saga)  # the claim was written, the saga document was not

    assert await wait_for_version(sagas, "saga-1", 2, within=5.0) == 2
    assert store.projection_repairs == 1


async def test_two_replicas_saving_the_same_sagas_at_once_never_both_win(
    mongodb_url, claims_mongo_store, make_saga
):
    # Two stores on one database, as two daemon replicas: each gathers its concurrent saves
    # into shared claim inserts, and of the two saves of one version exactly one may win.
    first = claims_mongo_store
    second = await MongoSagaStore.connect(mongodb_url, first.database.name)
    second.version_claims = True
    ids = [f"saga-{number}" for number in range(30)]
    for saga_id in ids:
        await first.insert(make_saga(saga_id))
    calls_before = first._claims._claiming.calls + second._claims._claiming.calls
    saves = 0
    try:
        for version in range(1, 4):
            writers = []
            for saga_id in ids:
                for name, store in (("first", first), ("second", second)):
                    saga = await store.load(saga_id)
                    saga.data["winner"] = name
                    writers.append((store, saga))
            results = await asyncio.gather(
                *(store.save(saga) for store, saga in writers), return_exceptions=True
            )
            saves += len(writers)
            for saga_id in ids:
                outcomes = [
                    result
                    for (_, saga), result in zip(writers, results, strict=True)
                    if saga.saga_id == saga_id
                ]
                won = [result for result in outcomes if not isinstance(result, BaseException)]
                assert len(won) == 1, outcomes
                assert [type(r) for r in outcomes if r not in won] == [VersionConflict]
                stored = await first.load(saga_id)
                assert stored.version == version + 1
                assert stored.data["winner"] == won[0].data["winner"]
    finally:
        await second.close()
    calls = first._claims._claiming.calls + second._claims._claiming.calls - calls_before
    assert calls < saves  # the claims went out together, not one call each


async def test_ferretdb_v1_gets_no_query_index_it_could_not_use(mongo_store, make_saga):
    build = await mongo_store.client.admin.command("buildInfo")
    on_ferretdb_v1 = is_ferretdb_v1(build)
    await mongo_store.insert(make_saga())

    indexes = {i["name"] async for i in await mongo_store.database["sagas"].list_indexes()}

    assert mongo_store.secondary_indexes is not on_ferretdb_v1
    query_indexes = {name for name, _, _ in SAGA_INDEXES}
    assert indexes == {"_id_"} | (set() if on_ferretdb_v1 else query_indexes)
