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
from collections.abc import Callable
from typing import Any

from orchestrator.adapters.memory import MemoryBroker, MemorySagaStore
from orchestrator.core.messages import Decision
from orchestrator.core.saga import Saga, SagaStatus
from orchestrator.demo.participants import FAILING_SERVICES, FaultPlan, Ledger, demo_services
from orchestrator.machines import MachineRegistry
from orchestrator.runtime.system import ActorSystem, RuntimeSettings
from participants_sdk.control import SagaClient

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


def order_data(index: int, rng: random.Random) -> dict[str, Any]:
    order_id = f"order-{index:06d}"
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


async def run_demo(
    registry: MachineRegistry,
    *,
    sagas: int,
    failure_rate: float,
    seed: int | None = None,
    finish_within: float = 120.0,
    settings: RuntimeSettings | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> DemoReport:
    rng = random.Random(seed)  # noqa: S311 - picks demo data, not secrets
    orders = [order_data(i, rng) for i in range(sagas)]
    plan = fault_plan(orders, failure_rate, rng)
    ledger = Ledger()
    broker = MemoryBroker()
    store = MemorySagaStore()
    system = ActorSystem(registry, store, broker.connect(), settings=settings)

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
        for service in demo_services(plan, ledger):
            await stack.enter_async_context(service.serve(broker.connect()))
        await stack.enter_async_context(system)
        connection = broker.connect()
        stack.push_async_callback(connection.close)
        client = SagaClient(connection)
        for order in orders:
            await client.start_saga(DEMO_MACHINE, order, saga_id=order["order_id"])
        if sagas:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_done.wait(), finish_within)
    elapsed = time.perf_counter() - began

    outcomes = dict.fromkeys(SagaStatus, 0)
    for saga in store.all():
        outcomes[saga.status] += 1
    done = sum(n for status, n in outcomes.items() if status.finished)
    return DemoReport(
        started=len(store),
        succeeded=outcomes[SagaStatus.SUCCEEDED],
        compensated=outcomes[SagaStatus.COMPENSATED],
        failed=outcomes[SagaStatus.FAILED],
        aborted=outcomes[SagaStatus.ABORTED],
        stuck=sagas - done,
        planned_failures=len(plan.failures),
        applied_twice=ledger.applied_twice,
        dead_lettered=sum(system.stats.dead_lettered.values()),
        commands=system.stats.commands_published,
        elapsed_s=round(elapsed, 3),
    )
