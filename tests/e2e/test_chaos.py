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
import collections
import random
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from chaos_support import (
    Run,
    finish,
    finish_times,
    history_entries,
    plan,
    recovery,
    rejected_sagas,
    retried_step,
    sized,
    through_proxy,
)
from e2e_outcomes import PLAN, finish_timeout, order_ids
from e2e_processes import SERVICES, Daemon, start_shop, wait_ready, wait_serving, wait_until
from e2e_store import load_sagas, wait_finished

from tests.contract.tcp_proxy import TcpProxy

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
        problems=problems,
    )


BACKLOG_MACHINES = Path(__file__).resolve().parent / "machines_backlog"
BACKLOG_SAGAS = sized(1000, 150)
BACKLOG_RATE = sized(25, 10)
BACKLOG_LOAD_S = BACKLOG_SAGAS / BACKLOG_RATE
BACKLOG_STEP_TIMEOUT = 3.0
"""prepare_order's timeout in `BACKLOG_MACHINES`; three attempts, 1 s and 2 s apart: the last
deadline falls 12 s after the first command."""
BACKLOG_WAIT_S = 7.0
"""The wait in stock's queue planned for the last saga's command: past the step's timeout and
its first backoff (the retry goes out while the first attempt still waits), well before the
last deadline. Early in the load the wait is shorter than the timeout; it grows all along."""
STOCK_PREFETCH = sized(16, 8)
"""Commands stock handles at a time. Each one also costs its reply's confirm, a few ms that the
planned throughput leaves out: the longer the handler, the less they add to the wait."""
STOCK_DELAY = STOCK_PREFETCH * (BACKLOG_LOAD_S + BACKLOG_WAIT_S) / BACKLOG_SAGAS
"""Seconds each stock handler takes: taking `STOCK_PREFETCH` commands at a time, stock needs
`BACKLOG_WAIT_S` seconds past the end of the load to work through one command per saga."""


@pytest.mark.timeout(TIMEOUT + 300)
async def test_participant_backlog_longer_than_the_step_timeout(
    clean_broker, database, processes, report
):
    """Stock takes commands slower than the load brings them: its queue grows until a command
    waits about 7 s, more than prepare_order's 3 s timeout. The daemon retries the step; the
    retry lands behind the first attempt and is answered from stock's journal. The first reply
    to arrive is the one to the first attempt, often after the retry went out: it is applied,
    the later ones are duplicates, and every saga ends as the fault plan says."""
    mongodb_url, store = database
    daemon = processes.daemon(mongodb_url, machines=BACKLOG_MACHINES)
    slow = ["--handler-delay", f"{STOCK_DELAY:.3f}", "--prefetch", str(STOCK_PREFETCH)]
    services = {
        name: processes.service(name, faults=slow if name == "stock" else ()) for name in SERVICES
    }
    await asyncio.gather(wait_ready(daemon), *(wait_serving(s) for s in services.values()))
    ids = order_ids("backlog", BACKLOG_SAGAS)
    failures = plan(ids)
    began = time.time()
    load = processes.load("backlog", BACKLOG_SAGAS, BACKLOG_RATE)
    await load.summary(timeout=TIMEOUT)
    await wait_finished(store, BACKLOG_SAGAS, timeout=TIMEOUT, diagnose=processes.tails)
    sagas = await load_sagas(store, ids)
    stock = retried_step(sagas, "prepare_order", timeout=BACKLOG_STEP_TIMEOUT)
    metrics = await daemon.metrics()
    rejected = rejected_sagas(services)
    undone = sorted(
        i for i, s in sagas.items() if s and s.status.value != "succeeded" and i not in rejected
    )
    problems = []
    if undone:
        problems.append(f"sagas no participant rejected did not succeed: {undone[:10]}")
    if stock.first_replies_after_the_retry == 0:
        problems.append(
            "no reply to a first attempt came after its retry: the backlog never exceeded the "
            f"timeout ({stock})"
        )
    await finish(
        Run(processes, store, services, failures, report, began),
        "participant_backlog",
        [],
        {
            "stock_handler_s": round(STOCK_DELAY, 3),
            "stock_prefetch": STOCK_PREFETCH,
            "step_timeout_s": BACKLOG_STEP_TIMEOUT,
            "longest_wait_for_stock_s": stock.longest_wait_s,
            "sagas_waiting_past_the_timeout": stock.waits_over_timeout,
            "sagas_retried_while_queued": stock.sagas_retried,
            "first_replies_applied_after_the_retry": stock.first_replies_after_the_retry,
            "first_replies_applied_after_a_timeout": stock.first_replies_after_a_timeout,
            "replies_applied_by_attempt": stock.replies_applied_by_attempt,
            "messages_by_disposition": {
                key: value
                for key, value in metrics.items()
                if key.startswith("sagawire_messages_total{")
            },
            "not_succeeded_without_a_rejection": len(undone),
        },
        sagas=sagas,
        problems=problems,
    )


CONFIRM_MACHINES = Path(__file__).resolve().parent / "machines_confirm"
CONFIRM_SAGAS = SAGAS
CONFIRM_RATE = 25.0
"""Slower than `RATE` at full size: the sagas held when the daemon dies all move on at once
after the restart, and that burst must stay well within the step timeout (at 40 sagas a second
its replies took up to 4.6 s to be applied)."""
CONFIRM_LOAD_S = CONFIRM_SAGAS / CONFIRM_RATE
CONFIRM_TIMEOUT_S = 5.0
"""Every step's and compensation's timeout in `CONFIRM_MACHINES`."""
HOLD_S = 3.0
"""How long the daemon's own bytes to RabbitMQ (publishes, acks) are held back before it is
killed: past the second in which the store marks an outbox published after its confirm, short
of the step timeout, so no deadline comes due in the daemon that holds them."""
CONFIRM_DOWN_S = 8.0
"""How long the daemon stays down: every command saved while held is past its deadline
counted from the save (5 s) when the daemon comes back."""
CONFIRM_HANDLER_S = 0.2
"""Seconds each participant's handler takes: quick next to the timeout, slow enough that
sagas are half-way (their replies reach the held daemon, which saves their next step's
command, a compensation among them) and not only just started when the hold begins."""


@pytest.mark.timeout(TIMEOUT + 300)
async def test_daemon_killed_between_save_and_publish(clean_broker, database, processes, report):
    """The daemon reaches RabbitMQ through a proxy. Near the end of the load the proxy holds
    back everything the daemon sends while it still forwards what RabbitMQ sends: the daemon
    goes on receiving replies and starts, saves each saga's next command in its outbox, and
    waits for confirms that never come. Then it is SIGKILLed and stays down 8 s, longer than
    the 5 s step timeout. The new daemon publishes those outboxes on recovery: their deadlines
    count from the confirm, so no step times out (participants answer within 0.2 s)."""
    mongodb_url, store = database
    broker = urlsplit(processes.amqp_url)
    proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672)
    await proxy.start()
    try:
        daemon = processes.daemon(
            mongodb_url,
            machines=CONFIRM_MACHINES,
            amqp_url=through_proxy(processes.amqp_url, proxy.port),
        )
        handler = ["--handler-delay", str(CONFIRM_HANDLER_S)]
        services = {name: processes.service(name, faults=handler) for name in SERVICES}
        await asyncio.gather(wait_ready(daemon), *(wait_serving(s) for s in services.values()))
        ids = order_ids("unpublished", CONFIRM_SAGAS)
        began = time.time()
        load = processes.load("unpublished", CONFIRM_SAGAS, CONFIRM_RATE)
        await asyncio.sleep(CONFIRM_LOAD_S - HOLD_S)
        proxy.hold()
        held = time.time()
        await asyncio.sleep(HOLD_S)
        daemon.kill()
        killed = time.time()
        held_bytes = proxy.held_bytes
    finally:
        await proxy.close()
    await asyncio.sleep(1.0)  # what FerretDB still ran for the dead daemon
    at_kill = await load_sagas(store, ids)
    unpublished = {i for i, s in at_kill.items() if s and s.outbox}
    unpublished_steps = collections.Counter(
        command.step for i in unpublished for command in at_kill[i].outbox
    )
    saved_while_held = {i for i in unpublished if at_kill[i].updated_at.timestamp() >= held}
    await asyncio.sleep(max(killed + CONFIRM_DOWN_S - time.time(), 0))
    daemon = processes.daemon(mongodb_url, machines=CONFIRM_MACHINES, name="daemon-restarted")
    restarted = time.time()
    await wait_ready(daemon)
    await load.summary(timeout=TIMEOUT)
    await wait_finished(store, CONFIRM_SAGAS, timeout=TIMEOUT, diagnose=processes.tails)
    sagas = await load_sagas(store, ids)
    timeouts = history_entries(sagas, ("timed_out", "retry_scheduled"))
    confirmed_late = history_entries(sagas, ("command_confirmed_late",))
    moved = daemon.log_events("deadlines_moved_to_confirm")
    recovered = sum(int(e.get("sagas", 0)) for e in daemon.log_events("outboxes_recovered"))
    not_moved = sorted(saved_while_held - set(confirmed_late))
    problems = []
    if timeouts:
        problems.append(f"steps timed out although every participant answered: {timeouts}")
    if not unpublished:
        problems.append("no saga held an unpublished outbox when the daemon was killed")
    if not confirmed_late:
        problems.append("no command's deadline was moved to its late confirm")
    if not_moved:
        problems.append(f"saved unpublished, published late, deadline not moved: {not_moved}")
    await finish(
        Run(processes, store, services, plan(ids), report, began),
        "daemon_killed_before_publish",
        [
            recovery(
                finish_times(sagas),
                fault_at=held,
                restart_at=restarted,
                since=began,
                fault=f"held {HOLD_S:.0f} s, down {restarted - killed:.0f} s",
            )
        ],
        {
            "step_timeout_s": CONFIRM_TIMEOUT_S,
            "participant_handler_s": CONFIRM_HANDLER_S,
            "held_s": HOLD_S,
            "daemon_down_s": round(restarted - killed, 1),
            "bytes_held_back": held_bytes,
            "sagas_in_the_store_at_the_kill": sum(1 for s in at_kill.values() if s),
            "saved_unpublished_at_the_kill": len(unpublished),
            "of_them_saved_while_held": len(saved_while_held),
            "unpublished_commands_by_step": dict(sorted(unpublished_steps.items())),
            "outboxes_recovered": recovered,
            "deadlines_moved": len(moved),
            "command_confirmed_late_entries": sum(confirmed_late.values()),
            "unpublished_at_the_kill_with_deadlines_moved": len(unpublished & set(confirmed_late)),
            "timeouts": sum(timeouts.values()),
        },
        sagas=sagas,
        problems=problems,
    )
