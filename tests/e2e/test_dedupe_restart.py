"""Exactly once across a participant's restart, over the real broker and store.

The example stock service (examples/python-participant: `MongoDedupeStore`, reservations keyed
by the idempotency key) is SIGKILLed in its first `prepare_order`, after the reservation and
before the ack, at one of two points (tests/e2e/crashing_stock.py). RabbitMQ gives the unacked
command to the service started again; the saga must succeed with the stock reserved once.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from e2e_broker import client_broker, start_orders
from e2e_processes import ProcessGroup, Service, wait_ready, wait_serving, wait_until
from e2e_store import load_sagas, wait_finished
from pymongo.asynchronous.database import AsyncDatabase

from orchestrator.core.saga import SagaStatus

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

CRASHING_STOCK = Path(__file__).resolve().parent / "crashing_stock.py"
SAGA = "dd-1"
KEY = f"{SAGA}:prepare_order:1"


def stock_service(processes: ProcessGroup, mongodb_url: str, crash: str) -> Service:
    env = {"SAGAWIRE_AMQP_URL": processes.amqp_url, "STOCK_MONGODB_URL": mongodb_url}
    return processes._spawn(Service, "stock", [str(CRASHING_STOCK), crash], env)


def reserved_events(service: Service) -> list[dict]:
    return [e for e in service.log_events("reserved") if e.get("idempotency_key") == KEY]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("crash", ["after-effect", "after-reply-stored"])
async def test_a_participant_killed_before_its_ack_applies_the_command_once(
    crash, clean_broker, database, processes, report
):
    mongodb_url, store = database
    daemon = processes.daemon(mongodb_url)
    others = [processes.service(name, failure_rate=0.0) for name in ("payment", "delivery")]
    first = stock_service(processes, mongodb_url, crash)
    await wait_ready(daemon)
    for service in [*others, first]:
        await wait_serving(service)

    async with client_broker(processes.amqp_url) as broker:
        await start_orders(broker, [SAGA])

    async def killed() -> bool:
        return not first.alive

    await wait_until(killed, timeout=60, what="the stock service to crash", diagnose=first.tail)
    assert first.popen.returncode == -signal.SIGKILL, first.tail()
    db: AsyncDatabase = store.database
    # Killed with the effect made: the reservation is there, and so is the reply if stored.
    assert await db["reservations"].count_documents({"key": KEY}) == 1
    replies_before = await db["replies"].count_documents({"_id": KEY})
    assert replies_before == (1 if crash == "after-reply-stored" else 0)

    again = stock_service(processes, mongodb_url, "none")
    await wait_serving(again)
    await wait_finished(store, 1, timeout=90, diagnose=processes.tails)

    saga = (await load_sagas(store, [SAGA]))[SAGA]
    assert saga is not None
    assert saga.status is SagaStatus.SUCCEEDED, saga.history
    reservations = await db["reservations"].find({"key": KEY}).to_list()
    assert [(r["sku"], r["quantity"]) for r in reservations] == [("sku-1", 2)]
    stored = await db["replies"].find_one({"_id": KEY})
    assert stored is not None
    assert stored["event"] == "order_prepared"
    assert saga.data["reservation"] == {"reservation_id": f"res-{KEY}"}
    # After the effect, the handler ran again and found the reservation; after the reply was
    # stored, the redelivered command was answered from the store without the handler.
    rerun = [e["new"] for e in reserved_events(again)]
    assert rerun == ([False] if crash == "after-effect" else [])
    report(
        f"killed {crash}: restarted service ran the handler {len(rerun)} time(s) for {KEY}; "
        f"reservations for it {len(reservations)}; saga {saga.status.value}"
    )
