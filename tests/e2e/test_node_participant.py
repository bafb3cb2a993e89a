"""End to end with a participant in another language: the `stock` service in Node.js.

The daemon and the Python `payment` and `delivery` services run as in test_e2e.py; `stock` is
examples/node-participant/stock.mjs, written from the README's wire protocol alone. It is
SIGKILLed while sagas run and started again on the same journal: the commands it held unacked
come back to it, each answered from its journal or applied once. Outcomes follow the fault plan,
which the Node service computes the same way as the Python ones.
"""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from e2e_broker import client_broker, start_orders
from e2e_http import metric_total
from e2e_outcomes import PLAN, check_outcomes, finish_timeout, order_ids, run_figures, scaled
from e2e_processes import NODE_PARTICIPANT, wait_ready, wait_serving, wait_until
from e2e_store import wait_finished

from orchestrator.demo.journal import read_records

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

COUNT = scaled(200)
HANDLER_DELAY_MS = 40
# Few commands in flight, each taking its handler delay: stock is the slowest step, so commands
# wait in its queue and the kill always catches some unacked.
PREFETCH = 2
KILL_AFTER_SHARE = 0.3
"""The Node service is killed once its journal holds this share of the lines it will hold."""


def node_executable() -> str:
    """The `node` program, with the example's npm dependencies installed; fails otherwise."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "`node` (Node.js 20) is not on PATH: install it to run this test", pytrace=False
        )
    if not (NODE_PARTICIPANT / "node_modules" / "amqplib").is_dir():
        pytest.fail(
            f"{NODE_PARTICIPANT / 'node_modules'} is missing: run `make node-deps` first",
            pytrace=False,
        )
    return node


def expected_stock_lines(ids: list[str]) -> int:
    """Journal lines stock writes: a reply to every prepare_order (its `out_of_stock`
    rejections included), and one to every release_stock (orders failing at delivery)."""
    failures = [PLAN.failure_for(saga_id) for saga_id in ids]
    return sum(f != "payment" for f in failures) + sum(f == "delivery" for f in failures)


@pytest.mark.timeout(finish_timeout(COUNT) + 120)
async def test_node_stock_service_killed_mid_run_applies_each_step_once(
    clean_broker, database, processes, report
):
    node = node_executable()
    mongodb_url, store = database
    daemon = processes.daemon(mongodb_url)
    payment, delivery = processes.service("payment"), processes.service("delivery")
    stock = processes.node_service(node, handler_delay_ms=HANDLER_DELAY_MS, prefetch=PREFETCH)
    await asyncio.gather(wait_ready(daemon), *(wait_serving(s) for s in (payment, delivery, stock)))

    ids = order_ids("node", COUNT)
    total_lines = expected_stock_lines(ids)
    kill_at = round(total_lines * KILL_AFTER_SHARE)
    began = time.time()
    async with client_broker(processes.amqp_url) as broker:
        await start_orders(broker, ids)

    async def journal_grown() -> int | None:
        lines = len(read_records(stock.ledger))
        return lines if lines >= kill_at else None

    await wait_until(
        journal_grown,
        timeout=60,
        interval=0.005,
        what=f"{kill_at} lines in the stock journal",
        diagnose=processes.tails,
    )
    stock.kill()
    lines_at_kill = len(read_records(stock.ledger))
    assert lines_at_kill < total_lines, (
        f"stock had written all {total_lines} journal lines before the kill: nothing in flight"
    )
    killed = time.monotonic()
    restarted = processes.node_service(node, handler_delay_ms=HANDLER_DELAY_MS, prefetch=PREFETCH)
    assert restarted.ledger == stock.ledger
    await wait_serving(restarted)
    down = time.monotonic() - killed

    counts = await wait_finished(
        store, len(ids), timeout=finish_timeout(COUNT), diagnose=processes.tails
    )
    metrics = await daemon.metrics()
    commands = metric_total(metrics, "sagawire_commands_published_total")
    failures = {saga_id: PLAN.failure_for(saga_id) for saga_id in ids}
    services = {"payment": payment, "stock": restarted, "delivery": delivery}
    sagas = await check_outcomes(store, processes, services, failures)

    # What the restarted service did with the commands the killed one held unacked.
    redelivered = [
        event
        for event in restarted.log_events()
        if event.get("event") in {"applied", "duplicate_answered"} and event.get("redelivered")
    ]
    answered = sum(1 for event in redelivered if event["event"] == "duplicate_answered")
    assert redelivered, f"no command came back to the restarted service\n{restarted.tail()}"
    assert len(read_records(stock.ledger)) == total_lines
    dead_letters = [*stock.log_events("dead_lettered"), *restarted.log_events("dead_lettered")]
    assert not dead_letters, f"the Node service dead-lettered commands: {dead_letters[:3]}"

    wall, rate, _ = run_figures(sagas, began, commands)
    report(f"{COUNT} sagas with the Node.js stock service, outcomes {counts}")
    report(
        f"stock SIGKILLed after {lines_at_kill} of {total_lines} journal lines, serving again "
        f"{down:.1f}s later; {len(redelivered)} commands redelivered to it: {answered} answered "
        f"from its journal, {len(redelivered) - answered} applied"
    )
    report(
        f"{commands:.0f} commands in {wall:.1f}s from the first start to the last finish "
        f"({rate:.1f} steps/s)"
    )
