"""The embedded demo: the order machine and the demo shop in one process, on memory adapters.

Sagas are started through the control queue, exactly as another service would start them, and
the outcome of each is read back from the store at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator.adapters.memory import MemoryBroker, MemorySagaStore
from orchestrator.core.machines import MachineRegistry
from orchestrator.core.messages import Decision
from orchestrator.core.saga import Saga, SagaStatus
from orchestrator.demo.participants import FAILING_SERVICES, FaultPlan, Ledger, demo_services
from orchestrator.ports import Broker, SagaStore
from orchestrator.runtime.system import ActorSystem, RuntimeSettings
from participants_sdk.saga_client import SagaClient

DEMO_MACHINE = "order"


@dataclasses.dataclass(frozen=True)
class DemoReport:
    started: int
    succeeded: int
    compensated: int
    failed: int
    aborted: int
    stuck: int
    planned_failures: int
    applied_twice: int
    dead_lettered: int
    commands: int
    elapsed_s: float

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def order_data(index: int, rng: random.Random, *, prefix: str = "") -> dict[str, Any]:
    order_id = f"order-{prefix}{index:06d}"
    return {
        "order_id": order_id,
        "customer_id": f"customer-{rng.randrange(1, 500):04d}",
        "total": round(rng.uniform(5, 500), 2),
        "items": [{"sku": f"sku-{rng.randrange(1, 100):03d}", "quantity": rng.randrange(1, 4)}],
        "address": f"{rng.randrange(1, 200)} Demo Street",
    }


def fault_plan(orders: list[dict[str, Any]], failure_rate: float, rng: random.Random) -> FaultPlan:
    """About `failure_rate` of the orders fail, each at a service picked at random."""
    plan = FaultPlan()
    for order in orders:
        if rng.random() < failure_rate:
            plan.failures[order["order_id"]] = rng.choice(FAILING_SERVICES)
    return plan


@dataclasses.dataclass
class DemoInfra:
    """Where the demo runs: connections to a broker, and a saga store."""

    connect: Callable[[str], Awaitable[Broker]]
    store: SagaStore
    close: Callable[[], Awaitable[None]]
    run_id: str = ""
    """Prefix of this run's saga ids, so that runs against a shared database never collide."""


def memory_infra() -> DemoInfra:
    broker = MemoryBroker()

    async def connect(_: str) -> Broker:
        return broker.connect()

    async def close() -> None:
        return None

    return DemoInfra(connect, MemorySagaStore(), close)


async def server_infra(amqp_url: str, mongodb_url: str) -> DemoInfra:
    """RabbitMQ and MongoDB: fails fast, naming the redacted URL, if either cannot be reached."""
    from orchestrator.adapters.mongo import MongoSagaStore  # noqa: PLC0415 - only for this mode
    from participants_sdk.rabbitmq import RabbitBroker  # noqa: PLC0415

    store = await MongoSagaStore.connect(mongodb_url)
    await store.ensure_indexes()
    brokers: list[RabbitBroker] = []

    async def connect(name: str) -> Broker:
        broker = await RabbitBroker.connect(amqp_url, name=f"sagawire-demo-{name}")
        brokers.append(broker)
        return broker

    async def close() -> None:
        for broker in brokers:
            await broker.close()
        await store.close()

    return DemoInfra(connect, store, close, run_id=f"{uuid.uuid4().hex[:8]}-")


async def run_demo(
    registry: MachineRegistry,
    *,
    sagas: int,
    failure_rate: float,
    seed: int | None = None,
    finish_within: float = 120.0,
    settings: RuntimeSettings | None = None,
    on_progress: Callable[[int], None] | None = None,
    infra: DemoInfra | None = None,
) -> DemoReport:
    rng = random.Random(seed)  # noqa: S311 - picks demo data, not secrets
    infra = infra or memory_infra()
    orders = [order_data(i, rng, prefix=infra.run_id) for i in range(sagas)]
    plan = fault_plan(orders, failure_rate, rng)
    ledger = Ledger()
    system = ActorSystem(
        registry, infra.store, await infra.connect("orchestrator"), settings=settings
    )

    finished: set[str] = set()
    all_done = asyncio.Event()

    def on_decision(_: Decision, saga: Saga) -> None:
        if saga.status.finished and saga.saga_id not in finished:
            finished.add(saga.saga_id)
            if on_progress is not None:
                on_progress(len(finished))
            if len(finished) >= sagas:
                all_done.set()

    system.listeners.append(on_decision)
    began = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(infra.close)
        for service in demo_services(plan, ledger):
            await stack.enter_async_context(service.serve(await infra.connect(service.service)))
        await stack.enter_async_context(system)
        client = SagaClient(await infra.connect("client"))
        for order in orders:
            await client.start_saga(DEMO_MACHINE, order, saga_id=order["order_id"])
        if sagas:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_done.wait(), finish_within)
        elapsed = time.perf_counter() - began
        outcomes = dict.fromkeys(SagaStatus, 0)
        started = 0
        for order in orders:
            saga = await infra.store.load(order["order_id"])
            if saga is not None:
                started += 1
                outcomes[saga.status] += 1
    done = sum(n for status, n in outcomes.items() if status.finished)
    return DemoReport(
        started=started,
        succeeded=outcomes[SagaStatus.SUCCEEDED],
        compensated=outcomes[SagaStatus.COMPENSATED],
        failed=outcomes[SagaStatus.FAILED],
        aborted=outcomes[SagaStatus.ABORTED],
        stuck=sagas - done,
        planned_failures=len(plan.failures),
        applied_twice=ledger.applied_twice,
        dead_lettered=sum(system.stats.dead_lettered.values()),
        commands=system.stats.commands_published.total(),
        elapsed_s=round(elapsed, 3),
    )
