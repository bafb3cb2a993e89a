"""The store through a MongoDB outage: the server goes away under concurrent writes and returns.

The server is reached through a `TcpProxy`, cut and restored, so the outage is exact and other
tests sharing the server are not disturbed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import pytest

from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.adapters.mongo.events import ServerStateLog
from orchestrator.errors import SagaExists, StoreError
from tests.contract.conftest import build_saga
from tests.contract.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.mongo, pytest.mark.asyncio]

WRITERS = 40
POOL = 4
"""Far fewer connections than writers: most writes wait in the driver's queue when the server
goes away, as under the daemon's load."""


def through(url: str, port: int) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    query = f"{parts.query}&maxPoolSize={POOL}" if parts.query else f"maxPoolSize={POOL}"
    return urlunsplit((parts.scheme, netloc, "/", query, ""))


async def wait_for(condition, what: str, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_the_server_back_after_an_outage_stays_usable_under_concurrent_writes(mongodb_url):
    target = urlsplit(mongodb_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 27017)
    await proxy.start()
    database = f"sagawire_test_{uuid.uuid4().hex[:8]}"
    store = await MongoSagaStore.connect(through(mongodb_url, proxy.port), database)
    events = store.server_state
    assert isinstance(events, ServerStateLog)
    written: Counter[str] = Counter()
    phase = "before"
    stop = asyncio.Event()

    async def writer(number: int) -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            saga = build_saga(f"w{number}-{sequence}")
            try:
                await store.insert(saga)
            except SagaExists:
                pass  # written by a try whose answer was lost
            except StoreError:
                await asyncio.sleep(0.05)  # as the daemon does: try again shortly
                continue
            written[phase] += 1

    writers = [asyncio.create_task(writer(n)) for n in range(WRITERS)]
    try:
        await wait_for(lambda: written["before"] >= 2 * WRITERS, "writes before the outage")
        before = events.changes.copy()
        await proxy.cut()
        phase = "down"
        await wait_for(lambda: events.changes["lost"] >= 1, "the driver to see the outage")
        await asyncio.sleep(1.0)
        cleared_while_down = events.changes["pool_cleared"]
        await proxy.restore()
        phase = "after"
        await wait_for(lambda: events.changes["back"] >= 1, "the driver to find the server again")
        await wait_for(lambda: written["after"] >= 4 * WRITERS, "writes after the outage")
        await asyncio.sleep(1.0)  # writes keep going: a late clear would show now
    finally:
        stop.set()
        await asyncio.gather(*writers, return_exceptions=True)
        await store.client.drop_database(database)
        await store.close()
        await proxy.close()

    # One outage: the pool is cleared while the server is away, never again once it is back.
    # Retried writes used to clear it again each time the monitor made it ready.
    changes = events.changes - before
    assert changes["pool_cleared"] == cleared_while_down - before["pool_cleared"] >= 1, changes
    assert changes["lost"] == 1, changes
    assert changes["back"] == 1, changes


async def test_retry_writes_are_off_exactly_where_the_server_cannot_retry_writes(mongo_store):
    servers = mongo_store.client.topology_description.server_descriptions().values()
    can_retry = any(server.retryable_writes_supported for server in servers)
    assert mongo_store.client.options.retry_writes is can_retry
