"""End to end with faults mid-run: RabbitMQ stopped and started, the daemon SIGKILLed.

The fault is placed once about a third of the sagas finished. Every saga must still reach the
outcome its fault plan says, and no participant may apply any step twice. The figures printed
are how long the system took to make progress again after the fault.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from e2e_support import (
    PLAN,
    check_outcomes,
    client_broker,
    finish_timeout,
    finished_count,
    order_ids,
    scaled,
    start_orders,
    start_shop,
    timed_out_steps,
    wait_finished,
    wait_ready,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.asyncio]

SOME = scaled(150)


async def run_until_a_third_finished(processes, database, prefix: str):
    """Start the shop and `SOME` orders; return (daemon, services, ids) once a third finished:
    the moment each fault is placed."""
    mongodb_url, store = database
    (daemon,), services = await start_shop(processes, mongodb_url)
    ids = order_ids(prefix, SOME)
    async with client_broker(processes.amqp_url) as broker:
        await start_orders(broker, ids)
    await wait_finished(
        store, SOME, at_least=SOME // 3, timeout=finish_timeout(SOME), diagnose=processes.tails
    )
    return daemon, services, ids


async def first_progress(store, after: int, *, timeout: float, diagnose) -> float:  # noqa: ASYNC109
    """Seconds until more than `after` sagas are finished."""
    began = time.monotonic()

    async def moved() -> bool:
        return (await finished_count(store))[0] > after

    await wait_until(
        moved, timeout=timeout, interval=0.5, what="a saga to finish", diagnose=diagnose
    )
    return time.monotonic() - began


@pytest.mark.timeout(finish_timeout(SOME) + 180)
async def test_rabbitmq_restart_mid_run(clean_broker, database, processes, servers, report):
    _, store = database
    daemon, services, ids = await run_until_a_third_finished(processes, database, "bunny")

    stopping = servers.stop_rabbitmq()
    await asyncio.sleep(2.5)  # the broker stays down a while
    starting = servers.start_rabbitmq()
    finished_at_restart, _ = await finished_count(store)
    dead = [p.name for p in processes.processes if not p.alive]
    assert not dead, f"exited while RabbitMQ was down: {dead}\n{processes.tails()}"

    progress = await first_progress(
        store, finished_at_restart, timeout=finish_timeout(SOME), diagnose=processes.tails
    )
    began = time.monotonic()
    await wait_finished(store, SOME, timeout=finish_timeout(SOME), diagnose=processes.tails)
    report(
        f"RabbitMQ stop took {stopping:.1f}s, start {starting:.1f}s; {finished_at_restart} of "
        f"{SOME} sagas finished when it was back; the next finished {progress:.1f}s later, "
        f"all {progress + time.monotonic() - began:.1f}s later"
    )
    status, _ = await daemon.get("/readyz")
    assert status == 200, daemon.tail()
    sagas = await check_outcomes(store, processes, services, {i: PLAN.failure_for(i) for i in ids})
    report(f"step attempts that timed out meanwhile: {timed_out_steps(sagas)}")


@pytest.mark.timeout(finish_timeout(SOME) + 180)
async def test_daemon_killed_mid_run_and_restarted(clean_broker, database, processes, report):
    mongodb_url, store = database
    daemon, services, ids = await run_until_a_third_finished(processes, database, "crash")

    daemon.kill()
    killed = time.monotonic()
    finished_at_kill, _ = await finished_count(store)
    again = processes.daemon(mongodb_url, name="daemon-restarted")
    ready = await wait_ready(again)
    await first_progress(
        store, finished_at_kill, timeout=finish_timeout(SOME), diagnose=processes.tails
    )
    next_finish = time.monotonic() - killed
    await wait_finished(store, SOME, timeout=finish_timeout(SOME), diagnose=processes.tails)
    report(
        f"daemon SIGKILLed with {finished_at_kill} of {SOME} sagas finished; the new one was "
        f"ready {ready:.1f}s after its start, the next saga finished {next_finish:.1f}s after "
        f"the kill, all {time.monotonic() - killed:.1f}s after it"
    )
    sagas = await check_outcomes(store, processes, services, {i: PLAN.failure_for(i) for i in ids})
    report(f"step attempts that timed out meanwhile: {timed_out_steps(sagas)}")
