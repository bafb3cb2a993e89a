"""End to end: the daemon and the participant services as separate processes, many sagas.

Over real RabbitMQ and MongoDB (FerretDB locally). Which orders fail where is
`FaultPlan(rate=0.2).failure_for(order_id)`, deterministic from the id, so every saga's outcome
and every participant's applied idempotency keys are known ahead. All sagas are started at once,
as a burst of orders would arrive. `SAGAWIRE_E2E_SCALE` scales the saga counts (default 1: the
issue's numbers).
"""

from __future__ import annotations

import time

import pytest
from e2e_broker import client_broker, start_orders
from e2e_http import metric_total
from e2e_outcomes import PLAN, check_outcomes, finish_timeout, order_ids, run_figures, scaled
from e2e_processes import SERVICES, start_shop
from e2e_store import wait_finished

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

MANY = scaled(300)


def fault_mix(ids: list[str]) -> dict[str, int]:
    failures = [PLAN.failure_for(saga_id) for saga_id in ids]
    return {str(kind): failures.count(kind) for kind in (None, *SERVICES)}


@pytest.mark.timeout(finish_timeout(MANY) + 120)
async def test_many_sagas_reach_their_outcomes_and_apply_each_step_once(
    clean_broker, database, processes, report
):
    mongodb_url, store = database
    (daemon,), services = await start_shop(processes, mongodb_url)
    ids = order_ids("many", MANY)

    began = time.time()
    async with client_broker(processes.amqp_url) as broker:
        await start_orders(broker, ids)
    counts = await wait_finished(
        store, len(ids), timeout=finish_timeout(MANY), diagnose=processes.tails
    )

    metrics = await daemon.metrics()
    commands = metric_total(metrics, "sagawire_commands_published_total")
    sagas = await check_outcomes(store, processes, services, {i: PLAN.failure_for(i) for i in ids})
    wall, rate, versions = run_figures(sagas, began, commands)
    claims = await store.database["saga_versions"].count_documents({})
    report(f"{MANY} sagas, failures by service {fault_mix(ids)}, outcomes {counts}")
    report(
        f"{commands:.0f} commands in {wall:.1f}s from the first start to the last finish: "
        f"{rate:.1f} steps/s, {len(ids) / wall:.2f} sagas/s"
    )
    moved = metric_total(metrics, "sagawire_deadlines_moved_total")
    ignored = metric_total(metrics, "sagawire_messages_total") - (versions - moved)
    report(
        f"saga saves per step {versions / commands:.2f} ({versions} versions, {moved:.0f} of "
        f"them for deadlines moved to a late confirm); version claims (FerretDB) per step "
        f"{claims / commands:.2f}; stale/duplicate replies {ignored:.0f}"
    )
    writes = metric_total(metrics, "sagawire_store_writes_total")
    round_trips = metric_total(metrics, "sagawire_store_round_trips_total")
    repaired = metric_total(metrics, "sagawire_store_documents_repaired_total")
    report(
        f"database writes per step {writes / commands:.2f}, write calls per step "
        f"{round_trips / commands:.2f}; saga documents repaired after a save {repaired:.0f}"
    )


@pytest.mark.timeout(finish_timeout(MANY) + 120)
async def test_two_daemons_on_the_same_queues_share_the_work(
    clean_broker, database, processes, report
):
    mongodb_url, store = database
    daemons, services = await start_shop(processes, mongodb_url, daemons=2)
    ids = order_ids("pair", MANY)

    began = time.time()
    async with client_broker(processes.amqp_url) as broker:
        await start_orders(broker, ids)
    await wait_finished(store, len(ids), timeout=finish_timeout(MANY), diagnose=processes.tails)

    metrics = [await daemon.metrics() for daemon in daemons]
    handled = [metric_total(m, "sagawire_messages_total") for m in metrics]
    conflicts = [metric_total(m, "sagawire_version_conflicts_total") for m in metrics]
    commands = sum(metric_total(m, "sagawire_commands_published_total") for m in metrics)
    sagas = await check_outcomes(store, processes, services, {i: PLAN.failure_for(i) for i in ids})
    wall, rate, _ = run_figures(sagas, began, commands)
    report(
        f"two daemons: messages {handled[0]:.0f} + {handled[1]:.0f}, version conflicts "
        f"{conflicts[0]:.0f} + {conflicts[1]:.0f}; {rate:.1f} steps/s over {wall:.1f}s"
    )
    assert all(n > 0 for n in handled), f"one daemon processed nothing: {handled}"
