"""Fixtures for the contract suites: every store test runs once per backend.

The MongoDB URL comes from `SAGAWIRE_TEST_MONGODB_URL`, else from `.services/env` at the repo root
(written by `make services`). With neither, a test that needs MongoDB fails, it never skips.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from orchestrator.adapters.memory import MemorySagaStore
from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.core.saga import (
    Compensation,
    CompletedStep,
    HistoryEntry,
    OutgoingCommand,
    PendingStep,
    Saga,
    SagaStatus,
)
from tests.services import ServiceUrls

# Millisecond precision: what MongoDB keeps.
T0 = dt.datetime(2030, 1, 1, 12, 0, 0, 123_000, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def mongodb_url(urls: ServiceUrls) -> str:
    return urls.mongodb


@contextlib.asynccontextmanager
async def fresh_mongo_store(
    url: str, *, version_claims: bool | None = None
) -> AsyncIterator[MongoSagaStore]:
    """A store on a database of its own, dropped afterwards.

    `version_claims`: as `connect()` chose for the server (None), or forced on or off.
    """
    database = f"sagawire_test_{uuid.uuid4().hex[:8]}"
    store = await MongoSagaStore.connect(url, database)
    if version_claims is not None:
        store.version_claims = version_claims
    try:
        await store.ensure_indexes()
        yield store
    finally:
        await store.client.drop_database(database)
        await store.close()


@pytest_asyncio.fixture
async def mongo_store(mongodb_url: str):
    async with fresh_mongo_store(mongodb_url) as store:
        yield store


@pytest_asyncio.fixture
async def plain_mongo_store(mongodb_url: str):
    """Saves as one conditional write, as on MongoDB (not safe for concurrent saves on FerretDB)."""
    async with fresh_mongo_store(mongodb_url, version_claims=False) as store:
        yield store


@pytest_asyncio.fixture
async def claims_mongo_store(mongodb_url: str):
    """Saves through version claims, as on FerretDB v1, whatever the server."""
    async with fresh_mongo_store(mongodb_url, version_claims=True) as store:
        yield store


@pytest_asyncio.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.mongo)])
async def store(request: pytest.FixtureRequest):
    if request.param == "mongo":
        # The URL fixture is synchronous; an async fixture cannot be requested from here.
        async with fresh_mongo_store(request.getfixturevalue("mongodb_url")) as mongo:
            yield mongo
        return
    memory = MemorySagaStore()
    yield memory
    await memory.close()


def build_saga(
    saga_id: str = "saga-1",
    *,
    status: SagaStatus = SagaStatus.COMPENSATING,
    deadline: dt.datetime | None = T0,
    outbox: bool = True,
    data: dict[str, Any] | None = None,
) -> Saga:
    """A saga in the middle of compensating, with every part filled in, at ms precision."""
    at = T0 - dt.timedelta(seconds=30)
    command = OutgoingCommand(
        message_id=f"{saga_id}-m1",
        saga_id=saga_id,
        machine="order",
        version=1,
        service="payment",
        name="refund_payment",
        step="compensate:execute_payment",
        visit=1,
        attempt=2,
        idempotency_key=f"{saga_id}:compensate:execute_payment:1",
        payload={"payment_id": "p-1", "amounts": [1.5, 2], "meta": {"nested": None}},
        compensates=f"{saga_id}:execute_payment:1",
    )
    paid = CompletedStep(step="execute_payment", state="execute_payment", visit=1, at=at)
    return Saga(
        saga_id=saga_id,
        machine="order",
        machine_version=1,
        status=status,
        state="prepare_order",
        label="COMPENSATING",
        data=data if data is not None else {"order_id": "o-1", "payment": {"payment_id": "p-1"}},
        visits={"execute_payment": 1, "prepare_order": 1},
        pending=[
            PendingStep(
                step="compensate:execute_payment",
                phase="compensation",
                state="execute_payment",
                service="payment",
                command="refund_payment",
                visit=1,
                attempt=2,
                max_attempts=5,
                waiting="reply",
                sent_at=T0 - dt.timedelta(seconds=5),
                deadline=deadline or T0,
                payload={"payment_id": "p-1"},
                idempotency_key=f"{saga_id}:compensate:execute_payment:1",
            )
        ],
        completed=[paid],
        compensation=Compensation(reason="out_of_stock", remaining=[paid], done=[]),
        deadline=deadline,
        outbox=[command] if outbox else [],
        history=[
            HistoryEntry(at=at, event="started", state="execute_payment"),
            HistoryEntry(at=T0, event="out_of_stock", state="prepare_order", step="prepare_order"),
        ],
        recent_requests=["r-1"],
        rejected=["prepare_order:1"],
        created_at=at,
        updated_at=T0,
    )


@pytest.fixture
def make_saga():
    return build_saga
