"""A daemon restart with many sagas in flight on the MongoDB store: time to the first completion.

    python -m bench.restart --sagas 100000 --ready 200

The database is seeded as a daemon that died under load leaves it: `sagas` order sagas at their
last step, deliver_order sent and its reply awaited (its deadline an hour off, so no timer fires
during the measurement). `ready` of them had their command published just before the death, not
yet confirmed, so it is still in their outbox; the participants answer those while no daemon
runs, and the replies wait in the reply queue. Then the daemon starts, and the run times its
start to the first finished saga and to its readiness (consuming). With every
saga's document present, this shows what at start grows with the sagas in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from bench.common import finished_sagas
from bench.sagawire import MACHINES, ROOT, SERVICES, Rig
from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.adapters.mongo.documents import to_document
from orchestrator.adapters.rabbitmq import RabbitBroker
from orchestrator.core.decide import decide
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.machines import load_machines
from orchestrator.core.messages import StartSaga, StepReply
from orchestrator.core.saga import Saga
from orchestrator.demo.participants import example_order
from orchestrator.runtime.codec import command_message
from tests.services import service_urls

T = TypeVar("T")
TEMPLATE_ID = "restart-00000000"
BATCH = 1000
REPLIES = (
    ("payment_executed", {"payment_id": "pay-1"}),
    ("order_prepared", {"reservation_id": "res-1"}),
)


def template(definition: MachineDefinition, now: dt.datetime) -> Saga:
    """An order saga run by the engine itself to its last step, waiting on delivery."""
    saga = decide(
        definition,
        None,
        StartSaga(saga_id=TEMPLATE_ID, machine="order", data=example_order(TEMPLATE_ID)),
        now,
    ).saga
    for event, payload in REPLIES:
        saga.outbox = []  # published and confirmed
        step = saga.pending[0]
        reply = StepReply(step.step, step.visit, step.attempt, event, payload)
        saga = decide(definition, saga, reply, now).saga
    far = now + dt.timedelta(hours=1)
    saga.pending = [dataclasses.replace(saga.pending[0], deadline=far)]
    saga.deadline = far
    saga.version = 3
    if [command.name for command in saga.outbox] != ["deliver_order"]:
        raise RuntimeError(f"the template saga's outbox is {saga.outbox}, not deliver_order")
    return saga


async def seed(url: str, sagas: int, ready: int) -> float:
    """Insert the sagas, `BATCH` documents per call; seconds it took."""
    definition = next(iter(load_machines(MACHINES)))
    model = template(definition, dt.datetime.now(dt.UTC))
    waiting = model.fork()
    waiting.outbox = []
    texts = {True: model.model_dump_json(), False: waiting.model_dump_json()}
    store = await MongoSagaStore.connect(url)
    began = time.monotonic()
    try:
        await store.ensure_indexes()
        collection = store.database["sagas"]
        for first in range(0, sagas, BATCH):
            documents = [
                to_document(
                    Saga.model_validate_json(
                        texts[n < ready].replace(TEMPLATE_ID, f"restart-{n:08d}")
                    ),
                    packed_history=store.packed_history,  # as the daemon writes them there
                )
                for n in range(first, min(first + BATCH, sagas))
            ]
            await collection.insert_many(documents, ordered=False)
    finally:
        await store.close()
    return time.monotonic() - began


async def publish_commands(amqp_url: str, ready: int) -> None:
    """The commands of the `ready` sagas, as the dead daemon published them just before it died
    (so they are still in the outboxes, unconfirmed): the participants answer them while no
    daemon runs, and the replies wait in the reply queue."""
    definition = next(iter(load_machines(MACHINES)))
    command = template(definition, dt.datetime.now(dt.UTC)).outbox[0]
    broker = await RabbitBroker.connect(amqp_url, name="sagawire-bench-restart")
    try:
        await broker.declare_topology(SERVICES)
        for n in range(ready):
            saga_id = f"restart-{n:08d}"
            message = command_message(
                dataclasses.replace(
                    command,
                    saga_id=saga_id,
                    message_id=command.message_id.replace(TEMPLATE_ID, saga_id),
                    idempotency_key=command.idempotency_key.replace(TEMPLATE_ID, saga_id),
                )
            )
            await broker.publish(message.exchange, message.routing_key, message)
    finally:
        await broker.close()


async def restart(
    amqp_url: str,
    mongodb_url: str,
    workdir: Path,
    sagas: int,
    ready: int,
    *,
    while_seeding: Awaitable[T] | None = None,
) -> tuple[dict[str, Any], T | None]:
    """Seed, restart, measure. `while_seeding` (another measurement that needs no database)
    runs meanwhile, to save the time; its result comes back with the figures."""
    rig = Rig(amqp_url, mongodb_url, "mongodb", workdir)
    rig.workdir.mkdir()
    other = None
    if while_seeding is None:
        seeded_s = await seed(rig.mongodb_url, sagas, ready)
    else:
        seeded_s, other = await asyncio.gather(seed(rig.mongodb_url, sagas, ready), while_seeding)
    try:
        await rig.start(daemon=False)
        await publish_commands(amqp_url, ready)
        began = time.monotonic()
        rig.start_daemon()
        # Readiness is noted if it comes while the answered sagas finish, not waited for.
        times: dict[str, float] = {}
        while "all_answered_finished" not in times:
            elapsed = time.monotonic() - began
            if elapsed > 600:
                raise RuntimeError(f"{ready} sagas did not finish in 600 s; see {rig.workdir}")
            finished = finished_sagas(await rig.metrics_or_none() or {})
            if finished >= 1:
                times.setdefault("first_completion", elapsed)
            if finished >= ready:
                times.setdefault("all_answered_finished", elapsed)
            if await rig.ready():
                times.setdefault("ready", elapsed)
            await asyncio.sleep(0.02)
        if "ready" not in times:
            times["ready_not_yet_after"] = time.monotonic() - began
        figures = {
            "sagas_in_flight": sagas,
            "replies_waiting": ready,
            "seed_seconds": round(seeded_s, 1),
            **{f"start_to_{name}_s": round(value, 2) for name, value in times.items()},
            "daemon_rss_bytes": rig.rss("daemon"),
        }
        return figures, other
    finally:
        rig.stop()
        await rig.drop_database()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sagas", type=int, default=100_000)
    parser.add_argument("--ready", type=int, default=200)
    args = parser.parse_args()
    urls = service_urls(ROOT)
    with tempfile.TemporaryDirectory(prefix="sagawire-restart-") as tmp:
        figures, _ = asyncio.run(
            restart(urls.amqp, urls.mongodb, Path(tmp) / "restart", args.sagas, args.ready)
        )
    print(json.dumps(figures), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
