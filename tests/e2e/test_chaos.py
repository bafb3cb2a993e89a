"""The reliability suite: faults injected while separate processes run sagas, with figures.

The daemon, the three participant services and the load generator are each a process of their
own, over real RabbitMQ and FerretDB. Each scenario injects its faults while the load runs, then
checks that every saga ended as its fault plan says (nothing lost), that no participant applied
any step twice (counted from the participants' journals), and records one entry in
`reports/reliability.json` (`make chaos`: the full sizes) or `reports/reliability-short.json`
(the short run inside `make test`). See docs/reliability.md for what each scenario proves.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from chaos_support import Run, finish, finish_times, plan, recovery, sized
from e2e_support import (
    PLAN,
    Daemon,
    finish_timeout,
    load_sagas,
    order_ids,
    shorten,
    start_shop,
    wait_finished,
    wait_ready,
    wait_serving,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.asyncio]

SAGAS = sized(1000, 150)
RATE = sized(40, 25)
"""Sagas started per second by the load generator: below what one daemon on FerretDB finishes."""
LOAD_S = SAGAS / RATE
TIMEOUT = finish_timeout(SAGAS) + 120


def fault_moments(count: int, *, seed: int) -> list[float]:
    """`count` random moments (seconds after the load began), one in each equal slot of the
    load's duration, away from the slot's edges so that each restart settles first."""
    rng = random.Random(seed)  # noqa: S311 - not for security: a reproducible schedule
    slot = LOAD_S / count
    return [n * slot + rng.uniform(0.3, 0.7) * slot for n in range(count)]


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(moment - time.monotonic(), 0))


@pytest.mark.timeout(TIMEOUT + 300)
async def test_daemon_sigkilled_five_times(clean_broker, database, processes, report):
    mongodb_url, store = database
    (daemon,), services = await start_shop(processes, mongodb_url)
    ids = order_ids("kill5", SAGAS)
    began = time.time()
    load = processes.load("kill5", SAGAS, RATE)
    start = time.monotonic()
    marks = []
    for n, moment in enumerate(fault_moments(5, seed=5)):
        await sleep_until(start + moment)
        daemon.kill()
        killed = time.time()
        daemon = processes.daemon(mongodb_url, name=f"daemon-after-kill-{n + 1}")
        marks.append((n + 1, killed, time.time()))
        await wait_ready(daemon)
    await load.summary(timeout=TIMEOUT)
    await wait_finished(store, SAGAS, timeout=TIMEOUT, diagnose=processes.tails)
    sagas = await load_sagas(store, ids)
    times = finish_times(sagas)
    recoveries = [
        recovery(
            times,
            fault_at=killed,
            restart_at=restarted,
            since=marks[n - 2][2] if n > 1 else began,
            fault=f"SIGKILL {n}",
        )
        for n, killed, restarted in marks
    ]
    await finish(
        Run(processes, store, services, plan(ids), report, began),
        "daemon_sigkill_x5",
        recoveries,
        sagas=sagas,
    )


@pytest.mark.timeout(TIMEOUT + 300)
async def test_three_replicas_one_sigkilled(clean_broker, database, processes, report):
    mongodb_url, store = database
    daemons, services = await start_shop(processes, mongodb_url, daemons=3)
    ids = order_ids("replicas", SAGAS)
    began = time.time()
    load = processes.load("replicas", SAGAS, RATE)
    await asyncio.sleep(LOAD_S * 0.4)
    daemons[1].kill()
    killed = time.time()
    await load.summary(timeout=TIMEOUT)
    await wait_finished(store, SAGAS, timeout=TIMEOUT, diagnose=processes.tails)
    sagas = await load_sagas(store, ids)
    times = finish_times(sagas)
    conflicts = [await _conflicts(d) for d in (daemons[0], daemons[2])]
    await finish(
        Run(processes, store, services, plan(ids), report, began),
        "three_replicas_one_killed",
        [recovery(times, fault_at=killed, restart_at=killed, since=began, fault="SIGKILL")],
        {"version_conflicts_of_survivors": conflicts},
        sagas=sagas,
    )


async def _conflicts(daemon: Daemon) -> float:
    metrics = await daemon.metrics()
    return metrics.get("sagawire_version_conflicts_total", 0.0)


OUTAGE_S = 10.0
OUTAGE_RATE = min(RATE, SAGAS / (2.5 * OUTAGE_S))
"""Slow enough that starts go on through the outage and after it."""


async def outage(
    run: Run, scenario: str, stop: Callable[[], float], start: Callable[[], float], fault: str
) -> None:
    """Stop a server 40% into the load, keep it down `OUTAGE_S` seconds, start it again."""
    prefix = scenario.split("_", maxsplit=1)[0]
    ids = order_ids(prefix, SAGAS)
    run.failures = plan(ids)
    load = run.processes.load(prefix, SAGAS, OUTAGE_RATE)
    await asyncio.sleep(SAGAS / OUTAGE_RATE * 0.4)
    stopping = time.time()
    stop()
    stopped = time.time()
    await asyncio.sleep(OUTAGE_S)
    start()
    back = time.time()
    await load.summary(timeout=TIMEOUT)
    await wait_finished(run.store, SAGAS, timeout=TIMEOUT, diagnose=run.processes.tails)
    sagas = await load_sagas(run.store, ids)
    times = finish_times(sagas)
    await finish(
        run,
        scenario,
        [recovery(times, fault_at=stopping, restart_at=back, since=run.began, fault=fault)],
        {"stop_took_s": round(stopped - stopping, 1), "down_s": round(back - stopped, 1)},
        sagas=sagas,
    )


@pytest.mark.timeout(TIMEOUT + 300)
async def test_rabbitmq_stopped_for_ten_seconds(clean_broker, database, processes, servers, report):
    mongodb_url, store = database
    _, services = await start_shop(processes, mongodb_url)
    run = Run(processes, store, services, {}, report)
    await outage(
        run, "rabbitmq_down_10s", servers.stop_rabbitmq, servers.start_rabbitmq, "RabbitMQ back"
    )


@pytest.mark.timeout(TIMEOUT + 300)
async def test_mongodb_stopped_for_ten_seconds(clean_broker, database, processes, servers, report):
    mongodb_url, store = database
    _, services = await start_shop(processes, mongodb_url)
    run = Run(processes, store, services, {}, report)
    await outage(run, "mongodb_down_10s", servers.stop_mongo, servers.start_mongo, "MongoDB back")


LATE_SHARE = 0.3
LATE_BY = 8.0
"""Past deliver_order's 6 s timeout in `LATE_MACHINES`: the step's second attempt is sent and
answered (from the participant's journal) before the first attempt's reply arrives."""
LATE_MACHINES = Path(__file__).resolve().parent / "machines_late"


@pytest.mark.timeout(TIMEOUT + 300)
async def test_participant_faults(clean_broker, database, processes, report):
    """Stock is SIGKILLed with handlers in flight and restarted; payment publishes every reply
    twice; delivery holds back the reply to the first attempt of 30% of the sagas past the step
    timeout, so it arrives after the second attempt's reply: late and out of order."""
    mongodb_url, store = database
    daemon = processes.daemon(mongodb_url, machines=LATE_MACHINES)
    options = {
        "payment": ["--duplicate-replies"],
        "stock": ["--handler-delay", "0.2"],
        "delivery": ["--late-replies", str(LATE_SHARE), "--late-by", str(LATE_BY)],
    }
    services = {name: processes.service(name, faults=opts) for name, opts in options.items()}
    await asyncio.gather(wait_ready(daemon), *(wait_serving(s) for s in services.values()))
    ids = order_ids("flaky", SAGAS)
    began = time.time()
    load = processes.load("flaky", SAGAS, RATE)
    await asyncio.sleep(LOAD_S * 0.4)
    services["stock"].kill()
    killed = time.time()
    services["stock"] = processes.service("stock", faults=options["stock"])
    restarted = time.time()
    await wait_serving(services["stock"])
    await load.summary(timeout=TIMEOUT)
    await wait_finished(store, SAGAS, timeout=TIMEOUT, diagnose=processes.tails)
    sagas = await load_sagas(store, ids)
    metrics = await daemon.metrics()
    dispositions = {
        key: value for key, value in metrics.items() if key.startswith("sagawire_messages_total{")
    }
    timed_out = sum(1 for s in sagas.values() if s for h in s.history if h.event == "timed_out")
    await finish(
        Run(processes, store, services, plan(ids), report, began),
        "participant_faults",
        [
            recovery(
                finish_times(sagas),
                fault_at=killed,
                restart_at=restarted,
                since=began,
                fault="stock SIGKILL",
            )
        ],
        {"messages_by_disposition": dispositions, "step_timeouts": timed_out},
        sagas=sagas,
    )
    assert timed_out > 0, "no reply was late enough to be out of order"


TIMER_MACHINES = Path(__file__).resolve().parent / "machines_timers"
TIMER_DOWN_S = 12.0
"""Longer than deliver_order's 10 s timeout in `TIMER_MACHINES`."""


@pytest.mark.timeout(TIMEOUT + 300)
async def test_due_timers_fire_once_after_the_daemon_was_down(
    clean_broker, database, processes, report
):
    """No delivery service runs: every saga that gets to deliver_order waits on its 10 s
    timeout. Once all wait, the daemon is SIGKILLed and stays down 12 s, longer than the
    timeout; after the restart every due timeout fires exactly once, the second attempt times
    out too, and the sagas compensate."""
    mongodb_url, store = database
    count = sized(200, 60)
    daemon = processes.daemon(mongodb_url, machines=TIMER_MACHINES)
    services = {name: processes.service(name) for name in ("payment", "stock")}
    await asyncio.gather(wait_ready(daemon), *(wait_serving(s) for s in services.values()))
    ids = order_ids("timers", count)
    failures = {
        i: f if (f := PLAN.failure_for(i)) in ("payment", "stock") else "delivery" for i in ids
    }
    waiting = sum(1 for f in failures.values() if f == "delivery")
    began = time.time()
    load = processes.load("timers", count, sized(50, 30))
    await load.summary(timeout=TIMEOUT)
    at_delivery = {"state": "deliver_order", "status": "running"}

    async def all_waiting() -> bool:
        return await store.database["sagas"].count_documents(at_delivery) >= waiting

    await wait_until(all_waiting, timeout=TIMEOUT, what="sagas waiting on delivery")
    daemon.kill()
    killed = time.time()
    waiting_when_killed = await store.database["sagas"].count_documents(at_delivery)
    await asyncio.sleep(TIMER_DOWN_S)
    daemon = processes.daemon(mongodb_url, machines=TIMER_MACHINES, name="daemon-restarted")
    restarted = time.time()
    await wait_ready(daemon)
    await wait_finished(store, count, timeout=TIMEOUT, diagnose=processes.tails)
    sagas = await load_sagas(store, ids)
    fired: dict[str, list[tuple[str, int | None]]] = {
        i: [(h.step or "", h.attempt) for h in s.history if h.event == "timed_out"]
        for i, s in sagas.items()
        if s
    }
    problems = [
        f"{i}: timeouts fired {f}"
        for i, f in fired.items()
        if failures[i] == "delivery" and sorted(f) != [("deliver_order", 1), ("deliver_order", 2)]
    ]
    problems += [
        f"{i}: timeouts fired {f}" for i, f in fired.items() if failures[i] != "delivery" and f
    ]
    await finish(
        Run(processes, store, services, failures, report, began),
        "timers_after_downtime",
        [
            recovery(
                finish_times(sagas),
                fault_at=killed,
                restart_at=restarted,
                since=began,
                fault=f"daemon down {TIMER_DOWN_S:.0f} s",
            )
        ],
        {
            "sagas_waiting_on_the_timeout": waiting,
            "waiting_when_the_daemon_died": waiting_when_killed,
            "daemon_down_s": TIMER_DOWN_S,
            "timeouts_fired": sum(len(f) for f in fired.values()),
            "timeouts_expected": 2 * waiting,
        },
        sagas=sagas,
    )
    assert not problems, shorten(problems)
