"""The reliability suite's bookkeeping: scale, recovery times, dead letters, the report.

Every scenario ends with one `Entry` in the report: what was started, how it ended, what was
lost or applied twice, what was dead-lettered and why, and how long recovery took. The entry is
written before the scenario's assertions run, so a failing scenario is reported too.

Recovery is measured from the sagas' own `finished_at` times, read from the store after the run:
"first completion" is the first saga finished after the restart; "steady" is the end of the first
2-second window after the restart in which sagas finished at least at 80% of the rate of the
window before the fault.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from e2e_outcomes import PLAN, expected_outcome, finish_timeout, ledger_problems, shorten
from e2e_processes import REPO, SERVICES, ProcessGroup, Service
from e2e_store import load_sagas, wait_finished

from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.adapters.rabbitmq import dead_letters as dlq
from orchestrator.core.saga import Saga
from orchestrator.demo.journal import applied_counts, read_records

FULL_VARIABLE = "SAGAWIRE_CHAOS"
REPORTS = REPO / "reports"
WINDOW_S = 2.0
STEADY_SHARE = 0.8


def full_run() -> bool:
    """`SAGAWIRE_CHAOS=full` (what `make chaos` sets): the issue's sizes; else the short run."""
    return os.environ.get(FULL_VARIABLE, "").lower() == "full"


def sized(full: int, short: int) -> int:
    return full if full_run() else short


def report_path() -> Path:
    return REPORTS / ("reliability.json" if full_run() else "reliability-short.json")


@dataclasses.dataclass
class Recovery:
    fault: str
    restart_to_first_completion_s: float | None
    restart_to_steady_s: float | None

    def describe(self) -> str:
        first, steady = self.restart_to_first_completion_s, self.restart_to_steady_s
        return (
            f"{self.fault}: first completion {_seconds(first)}, steady throughput "
            f"{_seconds(steady)} after the restart"
        )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def finish_times(sagas: Mapping[str, Saga | None]) -> list[float]:
    """When each finished saga finished, epoch seconds, sorted."""
    return sorted(s.finished_at.timestamp() for s in sagas.values() if s and s.finished_at)


def recovery(
    finished: list[float], *, fault_at: float, restart_at: float, since: float, fault: str
) -> Recovery:
    """Recovery after a fault at `fault_at`, the service back at `restart_at` (epoch seconds);
    the rate before the fault is taken over [max(since, fault_at - 10 s), fault_at)."""
    first = next((t for t in finished if t >= restart_at), None)
    base_from = max(since, fault_at - 10.0)
    before = sum(1 for t in finished if base_from <= t < fault_at)
    base_rate = before / (fault_at - base_from) if fault_at > base_from else 0.0
    steady = None
    if first is not None and base_rate > 0:
        start = restart_at
        last = finished[-1]
        while start + WINDOW_S <= last + WINDOW_S:
            count = sum(1 for t in finished if start <= t < start + WINDOW_S)
            if count / WINDOW_S >= STEADY_SHARE * base_rate:
                steady = start + WINDOW_S - restart_at
                break
            start += 0.25
    return Recovery(
        fault=fault,
        restart_to_first_completion_s=None if first is None else round(first - restart_at, 2),
        restart_to_steady_s=None if steady is None else round(steady, 2),
    )


async def dead_letters(amqp_url: str, services: Iterable[str] = SERVICES) -> dict[str, int]:
    """Every dead letter in the topology's DLQs, read without taking them: "queue: reason"
    (the reason cut at its first details) -> count."""
    connection = await dlq.connect(amqp_url)
    counted: collections.Counter[str] = collections.Counter()
    try:
        for queue in dlq.dead_letter_queues(services):
            try:
                letters = await dlq.browse(connection, queue, limit=None)
            except dlq.QueueMissing:
                continue  # never declared: holds nothing
            for letter in letters:
                counted[f"{queue}: {_short(letter.reason)}"] += 1
    finally:
        await connection.close()
    return dict(counted)


def _short(reason: str, limit: int = 90) -> str:
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def applied_twice(services: Mapping[str, Service]) -> dict[str, int]:
    """Per service, keys its journal shows applied more than once."""
    return {
        name: sum(1 for n in applied_counts(service.ledger).values() if n > 1)
        for name, service in services.items()
    }


@dataclasses.dataclass
class Entry:
    scenario: str
    title: str
    proves: str
    sagas_started: int
    finished: dict[str, int]
    lost: int
    applied_twice: int
    wrong_outcome: int
    dead_lettered: dict[str, int]
    recovery: list[Recovery]
    duration_s: float
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    """What the scenario's own checks found wrong, besides the counts above."""

    @property
    def passed(self) -> bool:
        counts = self.lost == 0 and self.applied_twice == 0 and self.wrong_outcome == 0
        return counts and not self.problems

    def to_json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["passed"] = self.passed
        body["variant"] = "full" if full_run() else "short"
        body["measured_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return body


def tally(
    sagas: Mapping[str, Saga | None], failures: Mapping[str, str | None]
) -> tuple[dict[str, int], int, int]:
    """(finished sagas by outcome, lost: not in the store or not finished, wrong outcome)."""
    outcomes: collections.Counter[str] = collections.Counter()
    lost = wrong = 0
    for saga_id, failure in failures.items():
        saga = sagas.get(saga_id)
        if saga is None or saga.finished_at is None:
            lost += 1
            continue
        outcomes[saga.status.value] += 1
        if saga.status.value != expected_outcome(failure):
            wrong += 1
    return dict(outcomes), lost, wrong


def write_entry(entry: Entry, path: Path | None = None) -> Path:
    """Put `entry` in the report file, replacing an older entry of the same scenario."""
    path = path or report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"scenarios": {}}
    if path.is_file():
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            report = {"scenarios": {}}
    report.setdefault("scenarios", {})[entry.scenario] = entry.to_json()
    report["machine"] = {"cpus": os.cpu_count()}
    report["updated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


TIMEOUT_EXTRA_S = 120


SCENARIOS: dict[str, tuple[str, str]] = {
    "daemon_sigkill_x5": (
        "The daemon SIGKILLed five times at random moments and restarted each time",
        (
            "A crash at any point of the actor's cycle loses nothing and repeats no effect: "
            "what was not stored is redelivered, what was stored is answered from the store."
        ),
    ),
    "three_replicas_one_killed": (
        "Three daemon replicas on the same queues; one SIGKILLed mid-run",
        (
            "Replicas share the work without a leader: version checks settle races, and "
            "the deliveries a dead replica held go to the others."
        ),
    ),
    "rabbitmq_down_10s": (
        "RabbitMQ stopped for 10 s mid-run, then started",
        (
            "Every process rides out the outage: publishes wait for the connection, "
            "unacked deliveries come back, consumers are attached again."
        ),
    ),
    "mongodb_down_10s": (
        "The MongoDB server (FerretDB) stopped for 10 s mid-run, then started",
        (
            "Nothing is acked that was not stored: deliveries wait while the store "
            "fails, and are applied once it answers again."
        ),
    ),
    "participant_faults": (
        (
            "A participant SIGKILLed mid-handler; every reply published twice; replies "
            "delivered late and out of order"
        ),
        (
            "A reply is applied once whatever arrives: duplicates and replies to an "
            "attempt that timed out are recognised and dropped; a command whose handler died "
            "is redelivered and applied once."
        ),
    ),
    "bad_input": (
        "Bad input of 20 kinds sent to the daemon's queues while sagas run",
        (
            "Nothing it cannot read or apply is lost or loops: each message is dead-lettered "
            "with its reason (or, for a reply to a finished step, counted as stale), and the "
            "daemon goes on finishing the other sagas."
        ),
    ),
    "timers_after_downtime": (
        "Sagas waiting on a 10 s timeout while the daemon is down for 12 s",
        (
            "Deadlines are stored with the saga: after a restart every due timeout fires "
            "exactly once, found by the sweeper, and the step's retry and compensation follow "
            "(the first saga finishes once that retry timed out too, 11 s after the restart)."
        ),
    ),
    "participant_backlog": (
        (
            "A participant (stock) so slow that commands wait in its queue longer than the "
            "step's timeout"
        ),
        (
            "A step retried while its first attempt still waits in the participant's queue "
            "ends as the participant decided: the retry lands behind the first attempt and is "
            "answered from the participant's journal, the first reply to arrive (the one to the "
            "attempt that timed out, after the retry went out) is applied, and no saga whose "
            "steps all succeeded at the participants ends compensated."
        ),
    ),
    "daemon_killed_before_publish": (
        (
            "The daemon SIGKILLed with commands saved in outboxes but not yet published, then "
            "down longer than the step timeout"
        ),
        (
            "A step's deadline counts from the broker's confirm of its command: the commands "
            "published on recovery get their whole timeout, so no step times out while the "
            "participants answer within 0.2 s; nothing saved is lost, nothing is applied twice."
        ),
    ),
}
"""Scenario -> (what is done, what it proves), as the report and docs/reliability.md say."""


@dataclasses.dataclass
class Run:
    """One scenario's run: its processes, store, services and plan."""

    processes: ProcessGroup
    store: MongoSagaStore
    services: dict[str, Service]
    failures: dict[str, str | None]
    report: Callable[[str], None]
    began: float = dataclasses.field(default_factory=time.time)


async def finish(
    run: Run,
    scenario: str,
    recoveries: list[Recovery],
    details: dict[str, Any] | None = None,
    *,
    sagas: Mapping[str, Saga | None] | None = None,
    problems: list[str] | None = None,
) -> Mapping[str, Saga | None]:
    """Wait for every saga, write the scenario's entry, then assert what it must hold.

    `sagas`: the run's sagas as the test loaded them once all finished (else loaded here).
    `problems`: what the scenario's own checks found; any fails the entry as well as the test.
    """
    waited: AssertionError | None = None
    try:
        await wait_finished(
            run.store,
            len(run.failures),
            timeout=finish_timeout(len(run.failures)) + TIMEOUT_EXTRA_S,
            diagnose=run.processes.tails,
        )
    except AssertionError as exc:
        waited = exc
    if sagas is None or waited is not None:
        sagas = await load_sagas(run.store, run.failures)
    finished, lost, wrong = tally(sagas, run.failures)
    for service in run.services.values():
        service.stop()  # the journals are complete once the services stopped
    twice = applied_twice(run.services)
    letters = await dead_letters(run.processes.amqp_url)
    title, proves = SCENARIOS[scenario]
    entry = Entry(
        scenario=scenario,
        title=title,
        proves=proves,
        sagas_started=len(run.failures),
        finished=finished,
        lost=lost,
        applied_twice=sum(twice.values()),
        wrong_outcome=wrong,
        dead_lettered=letters,
        recovery=recoveries,
        duration_s=round(time.time() - run.began, 1),
        details=details or {},
        problems=[_short(problem, 300) for problem in problems or []],
    )
    path = write_entry(entry)
    run.report(
        f"{scenario}: {len(run.failures)} sagas, finished {finished}, lost {lost}, applied "
        f"twice {entry.applied_twice}, wrong outcome {wrong}, dead letters "
        f"{sum(letters.values())} ({path.name})"
    )
    for item in recoveries:
        run.report(item.describe())
    if waited is not None:
        raise waited
    applied = {name: service.read_ledger()["applied"] for name, service in run.services.items()}
    problems = ledger_problems(applied, run.failures)
    assert not problems, f"{shorten(problems)}\n{run.processes.tails()}"
    assert entry.passed, shorten(entry.problems) if entry.problems else entry
    return sagas


def plan(ids: list[str]) -> dict[str, str | None]:
    return {saga_id: PLAN.failure_for(saga_id) for saga_id in ids}


# -- figures of single scenarios ------------------------------------------------------------


def history_entries(
    sagas: Mapping[str, Saga | None], events: Iterable[str], *, step: str | None = None
) -> dict[str, int]:
    """Per saga id, how many of its history entries are one of `events` (of `step`, if given);
    sagas with none are left out."""
    wanted = set(events)
    counted = {
        saga_id: sum(
            1 for h in saga.history if h.event in wanted and (step is None or h.step == step)
        )
        for saga_id, saga in sagas.items()
        if saga is not None
    }
    return {saga_id: n for saga_id, n in counted.items() if n}


def rejected_sagas(services: Mapping[str, Service]) -> set[str]:
    """The sagas some participant rejected a command of (a business failure), from the
    participants' journals; an idempotency key starts with the saga id and a colon."""
    return {
        str(record["key"]).split(":", 1)[0]
        for service in services.values()
        for record in read_records(service.ledger)
        if record["rejected"]
    }


@dataclasses.dataclass
class RetriedStep:
    """How one step's replies met its retries, over the sagas of a run."""

    sagas_retried: int = 0
    """Sagas in which the step timed out at least once (the daemon retried it)."""
    first_replies_after_the_retry: int = 0
    """Replies to the first attempt applied after the second attempt's command was sent."""
    first_replies_after_a_timeout: int = 0
    """Replies to the first attempt applied after it timed out, before the retry was sent."""
    replies_applied_by_attempt: dict[int, int] = dataclasses.field(default_factory=dict)
    longest_wait_s: float = 0.0
    """The longest time from the step's first command to the reply applied."""
    waits_over_timeout: int = 0
    """Sagas whose reply came later than `timeout` after the step's first command."""


def retried_step(sagas: Mapping[str, Saga | None], step: str, *, timeout: float) -> RetriedStep:
    """`RetriedStep` of `step` (visited once per saga) from the sagas' histories."""
    figures = RetriedStep()
    by_attempt: collections.Counter[int] = collections.Counter()
    for saga in sagas.values():
        if saga is None:
            continue
        timed_out, reply = _step_reply(saga, step)
        figures.sagas_retried += timed_out
        if reply is None:
            continue
        attempt, after, wait = reply
        by_attempt[attempt] += 1
        if attempt == 1 and after == "retry":
            figures.first_replies_after_the_retry += 1
        elif attempt == 1 and after == "timeout":
            figures.first_replies_after_a_timeout += 1
        if wait is not None:
            figures.longest_wait_s = max(figures.longest_wait_s, round(wait, 1))
            figures.waits_over_timeout += wait > timeout
    figures.replies_applied_by_attempt = dict(sorted(by_attempt.items()))
    return figures


def _step_reply(saga: Saga, step: str) -> tuple[bool, tuple[int, str, float | None] | None]:
    """(whether `step` timed out, and of the reply applied: its attempt, what came before it
    ("retry": a later attempt's command, "timeout", or "-"), seconds since the first command)."""
    first_sent: dt.datetime | None = None
    before = "-"
    timed_out = False
    for entry in saga.history:
        if entry.step != step:
            continue
        if entry.event == "command_sent":
            if first_sent is None:
                first_sent = entry.at
            else:
                before = "retry"
        elif entry.event == "timed_out":
            timed_out = True
            before = "timeout" if before == "-" else before
        elif entry.event == "replied":
            wait = None if first_sent is None else (entry.at - first_sent).total_seconds()
            return timed_out, (entry.attempt or 0, before, wait)
    return timed_out, None


def through_proxy(amqp_url: str, port: int) -> str:
    """`amqp_url` (user, password and virtual host kept) pointed at a proxy on 127.0.0.1."""
    parts = urlsplit(amqp_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))
