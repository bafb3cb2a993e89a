"""`MongoDedupeStore` on the real server: replies kept by key, across store instances (a restart),
whatever JSON the reply holds, and expiring after their retention."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from participants_sdk import CommandContext, MemoryBroker, Participant, StoredReply, protocol
from participants_sdk.mongo_dedupe import TTL_INDEX, MongoDedupeStore
from tests.services import with_database

pytestmark = [pytest.mark.mongo, pytest.mark.asyncio]


@pytest_asyncio.fixture
async def database_url(mongodb_url: str):
    name = f"sagawire_dedupe_{uuid.uuid4().hex[:8]}"
    url = with_database(mongodb_url, name)
    yield url
    store = await MongoDedupeStore.connect(url)
    await store.collection.database.client.drop_database(name)
    await store.close()


@pytest_asyncio.fixture
async def store(database_url: str):
    store = await MongoDedupeStore.connect(database_url)
    yield store
    await store.close()


async def test_a_reply_is_found_by_its_key_and_the_first_one_stays(store):
    assert await store.get("s-1:reserve:1") is None
    first = StoredReply("order_prepared", {"reservation_id": "r-1", "items": [{"sku": "A"}]})
    await store.put("s-1:reserve:1", first)
    await store.put("s-1:reserve:1", StoredReply("order_prepared", {"reservation_id": "r-2"}))
    await store.put("s-2:reserve:1", StoredReply("out_of_stock", {"sku": "B"}, rejected=True))
    assert await store.get("s-1:reserve:1") == first
    assert await store.get("s-2:reserve:1") == StoredReply(
        "out_of_stock", {"sku": "B"}, rejected=True
    )


async def test_the_server_expires_entries_or_the_store_purges_them(database_url):
    store = await MongoDedupeStore.connect(database_url, retention=60)
    try:
        indexes = {index["name"]: index async for index in await store.collection.list_indexes()}
        if store.server_expires:
            assert indexes[TTL_INDEX]["expireAfterSeconds"] == 0
            assert dict(indexes[TTL_INDEX]["key"]) == {"expires_at": 1}
        else:  # FerretDB v1: no TTL indexes; the store deletes what expired itself
            assert store.server_expires is False
            assert TTL_INDEX not in indexes
        await store.put("old", StoredReply("done", {}))
        await store.put("new", StoredReply("done", {}))
        await store.collection.update_one(
            {"_id": "old"}, {"$set": {"expires_at": dt.datetime.now(dt.UTC)}}
        )
        assert await store.purge_expired() == 1
        assert await store.get("old") is None
        assert await store.get("new") == StoredReply("done", {})
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)
        assert await store.purge_expired(later) == 1
    finally:
        await store.close()


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)  # past BSON's 64-bit integers
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.dictionaries(st.text(), JSON_VALUES, max_size=5), rejected=st.booleans())
async def test_any_json_reply_comes_back_as_it_went_on_the_wire(store, body, rejected):
    # Keys such as "$set", "a.b" or "" and integers past 64 bits are fine: the body is kept as
    # the JSON text sent on the wire.
    key = uuid.uuid4().hex
    await store.put(key, StoredReply("event", body, rejected))
    stored = await store.get(key)
    assert stored is not None
    assert protocol.encode_json(stored.body) == protocol.encode_json(body)
    assert json.loads(protocol.encode_json(stored.body)) == json.loads(protocol.encode_json(body))
    assert stored.rejected is rejected


class Reserve(BaseModel):
    order_id: str


class Reserved(BaseModel):
    reservation_id: str


def stock_service(store: MongoDedupeStore, calls: list[str]) -> Participant:
    stock = Participant("stock", dedupe=store)

    @stock.command_handler("reserve")
    async def reserve(cmd: Reserve, ctx: CommandContext) -> Reserved:
        calls.append(ctx.idempotency_key)
        return Reserved(reservation_id=f"r-{len(calls)}")

    return stock


def reserve_command(attempt: int) -> protocol.WireMessage:
    return protocol.WireMessage.json(
        type="reserve",
        payload={"order_id": "o-1"},
        correlation_id="s-1",
        headers={
            protocol.H_IDEMPOTENCY_KEY: "s-1:reserve:1",
            protocol.H_STEP: "reserve",
            protocol.H_VISIT: 1,
            protocol.H_ATTEMPT: attempt,
            protocol.H_MACHINE: "order",
        },
    )


async def test_a_service_started_again_answers_a_command_it_applied_before(database_url):
    broker = MemoryBroker()
    calls: list[str] = []
    replies = protocol.reply_queue("stock")
    for attempt in (1, 2):  # the second process, on a new store: as after a restart
        store = await MongoDedupeStore.connect(database_url)
        try:
            connection = broker.connect()
            await connection.declare_topology(["stock"])
            async with stock_service(store, calls).serve(connection):
                await connection.publish(
                    protocol.COMMANDS_EXCHANGE, "stock.reserve", reserve_command(attempt)
                )
                await broker.wait_idle()
        finally:
            await store.close()
    assert calls == ["s-1:reserve:1"]
    first, second = broker.messages(replies)
    assert first.body == second.body == b'{"reservation_id":"r-1"}'
    assert (first.headers[protocol.H_ATTEMPT], second.headers[protocol.H_ATTEMPT]) == (1, 2)


async def test_a_url_without_a_database_is_refused_naming_it_without_its_password():
    with pytest.raises(ValueError, match=r"mongodb://app:\*\*\*@127\.0\.0\.1:1/ names no database"):
        await MongoDedupeStore.connect("mongodb://app:secret@127.0.0.1:1/")
