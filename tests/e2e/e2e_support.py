"""Helpers for the end-to-end tests: real processes over real RabbitMQ and MongoDB.

Every process a test starts is a `ManagedProcess` with its stdout and stderr in files under the
test's `tmp_path`, stopped by `ProcessGroup.close()` (SIGTERM, then SIGKILL) at teardown. Waits
poll with a deadline: `/readyz`, the participants' "serving" line, the store's counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aio_pika

from bench.common import parse_metrics
from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.adapters.mongo_queries import counts_by_machine
from orchestrator.core.saga import Saga, SagaStatus
from orchestrator.demo.journal import applied_counts
from orchestrator.demo.participants import FaultPlan, example_order
from orchestrator.testing_backends import delete_queues, topology_queues
from participants_sdk import protocol as p
from participants_sdk.control import SagaClient
from participants_sdk.rabbitmq import RabbitBroker

REPO = Path(__file__).resolve().parents[2]
ORDER_MACHINE = REPO / "machines" / "order.yaml"
"""The production order machine: 30 s step timeouts ride out a broker restart."""
E2E_MACHINES = Path(__file__).resolve().parent / "machines"
"""The order machine with a 3 s deliver_order timeout, for the timeout scenario."""
SERVICES = ("payment", "stock", "delivery")
FAILURE_RATE = 0.2
FINISHED = ("succeeded", "compensated", "failed", "aborted")
SERVING_LINE = "serving"

T = TypeVar("T")


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int) -> str:
    if not path.is_file():
        return "(no output file)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:]) if text else "(empty)"


@dataclasses.dataclass
class ManagedProcess:
    """One subprocess with its stdout and stderr each in a file."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The end of both outputs, for assertion messages."""
        return (
            f"--- {self.name} (pid {self.pid}, exit {self.popen.poll()}) stderr, last {lines} "
            f"lines ---\n{_tail(self.stderr, lines)}\n--- {self.name} stdout ---\n"
            f"{_tail(self.stdout, 5)}"
        )

    def log_events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines on stderr (optionally only those of one event)."""
        events = []
        if not self.stderr.is_file():
            return events
        for line in self.stderr.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and (event is None or record.get("event") == event):
                    events.append(record)
        return events

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is finished or flushed."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, grace: float = 8.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; the exit code (negative: a signal)."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.send_signal(signal.SIGKILL)
                self.popen.wait(timeout=10)
        return self.popen.returncode


@dataclasses.dataclass
class Daemon(ManagedProcess):
    http_port: int = 0

    async def get(self, path: str) -> tuple[int, str]:
        return await http_get(self.http_port, path)

    async def metrics(self) -> dict[str, float]:
        status, body = await self.get("/metrics")
        if status != 200:
            raise AssertionError(f"/metrics answered {status}\n{self.tail()}")
        return parse_metrics(body)


@dataclasses.dataclass
class Service(ManagedProcess):
    ledger: Path = Path()
    """The service's journal: one line per reply it stored, kept across its restarts."""

    def read_ledger(self) -> dict[str, Any]:
        """{"applied": idempotency key -> times applied}, from the journal."""
        return {"applied": applied_counts(self.ledger)}


@dataclasses.dataclass
class LoadGenerator(ManagedProcess):
    async def summary(self, *, timeout: float) -> dict[str, float]:  # noqa: ASYNC109
        """Wait for it to exit 0; what it printed."""

        async def exited() -> bool:
            return not self.alive

        await wait_until(exited, timeout=timeout, what=f"{self.name} to finish", diagnose=self.tail)
        if self.popen.returncode != 0:
            raise AssertionError(f"{self.name} failed\n{self.tail()}")
        return json.loads(self.stdout.read_text(encoding="utf-8").strip().splitlines()[-1])


P = TypeVar("P", bound=ManagedProcess)


class ProcessGroup:
    """Starts the test's processes and stops every one of them at the end."""

    def __init__(self, workdir: Path, amqp_url: str) -> None:
        self.workdir = workdir
        self.amqp_url = amqp_url
        self.processes: list[ManagedProcess] = []
        self._names: dict[str, int] = {}

    def _unique(self, name: str) -> str:
        self._names[name] = self._names.get(name, 0) + 1
        return name if self._names[name] == 1 else f"{name}-{self._names[name]}"

    def _spawn(
        self, kind: type[P], name: str, args: list[str], env: Mapping[str, str], **extra: Any
    ) -> P:
        name = self._unique(name)
        stdout, stderr = self.workdir / f"{name}.out", self.workdir / f"{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            popen = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, *args],
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        process = kind(name=name, popen=popen, stdout=stdout, stderr=stderr, **extra)
        self.processes.append(process)
        return process

    def daemon(
        self,
        mongodb_url: str,
        *,
        machines: Path = ORDER_MACHINE,
        name: str = "daemon",
        amqp_url: str | None = None,
    ) -> Daemon:
        """`python -m orchestrator run` on a free HTTP port, JSON logs at INFO on its stderr;
        on the test's broker, or at `amqp_url` (e.g. through a proxy to it)."""
        port = free_port()
        settings = {
            "SAGAWIRE_AMQP_URL": amqp_url or self.amqp_url,
            "SAGAWIRE_MONGODB_URL": mongodb_url,
            "SAGAWIRE_MACHINES": str(machines),
            "SAGAWIRE_HTTP_PORT": str(port),
            "SAGAWIRE_LOG_LEVEL": "INFO",
            "SAGAWIRE_LOG_JSON": "true",
        }
        return self._spawn(Daemon, name, ["-m", "orchestrator", "run"], settings, http_port=port)

    def service(
        self,
        name: str,
        *,
        failure_rate: float = FAILURE_RATE,
        broken: Iterable[str] = (),
        faults: Iterable[str] = (),
    ) -> Service:
        """`python -m orchestrator.demo.service NAME` keeping its journal in a file (the same
        file for a service started again under the same name); JSON logs from WARNING (retries
        and dead letters) on its stderr. `faults` are more options of the program, e.g.
        `--duplicate-replies`."""
        ledger = self.workdir / f"{name}.journal"
        args = ["-m", "orchestrator.demo.service", name, "--failure-rate", str(failure_rate)]
        args += ["--journal", str(ledger), *faults]
        for command in broken:
            args += ["--broken", command]
        env = {"SAGAWIRE_AMQP_URL": self.amqp_url, "SAGAWIRE_LOG_LEVEL": "WARNING"}
        return self._spawn(Service, name, args, env, ledger=ledger)

    def load(self, prefix: str, count: int, rate: float) -> LoadGenerator:
        """`python -m orchestrator.demo.load`: `count` order sagas at `rate` per second."""
        args = ["-m", "orchestrator.demo.load", "--prefix", prefix, "--count", str(count)]
        args += ["--rate", str(rate)]
        return self._spawn(
            LoadGenerator, f"load-{prefix}", args, {"SAGAWIRE_AMQP_URL": self.amqp_url}
        )

    def close(self, grace: float = 30.0) -> None:
        """Stop every process: all get SIGTERM at once, then whoever is left after `grace`
        seconds gets SIGKILL. The grace is long because a daemon killed while its database
        calls are still queued in FerretDB leaves that server working on them for a while."""
        for process in self.processes:
            if process.alive:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=max(deadline - time.monotonic(), 0.01))
        for process in self.processes:
            if process.alive:
                process.popen.send_signal(signal.SIGKILL)
                process.popen.wait(timeout=10)

    def tails(self, lines: int = 30) -> str:
        return "\n".join(process.tail(lines) for process in self.processes)


async def http_get(port: int, path: str, *, timeout: float = 5.0) -> tuple[int, str]:  # noqa: ASYNC109
    """A plain HTTP/1.1 GET on 127.0.0.1: (status, body)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode("utf-8", errors="replace")


def metric_total(samples: Mapping[str, float], name: str) -> float:
    """The sum of every sample of `name`, whatever its labels."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,  # noqa: ASYNC109
    interval: float = 0.1,
    what: str,
    diagnose: Callable[[], str] = str,
) -> T:
    """Poll `probe` until it returns something other than None/False; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnose()}")
        await asyncio.sleep(interval)


async def wait_ready(daemon: Daemon, *, timeout: float = 30.0) -> float:  # noqa: ASYNC109
    """Poll `/readyz` until 200; seconds it took from the spawn. Fails at once if it exited."""

    async def ready() -> bool:
        if not daemon.alive:
            raise AssertionError(f"{daemon.name} exited before it was ready\n{daemon.tail()}")
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            status, _ = await daemon.get("/readyz")
            return status == 200
        return False

    await wait_until(ready, timeout=timeout, what=f"{daemon.name} /readyz", diagnose=daemon.tail)
    return time.monotonic() - daemon.started


async def wait_serving(service: Service, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Wait for the participant program's "serving ..." line on stdout."""

    async def serving() -> bool:
        if not service.alive:
            raise AssertionError(f"{service.name} exited before serving\n{service.tail()}")
        return service.stdout.is_file() and SERVING_LINE in service.stdout.read_text()

    await wait_until(
        serving, timeout=timeout, what=f"{service.name} serving", diagnose=service.tail
    )


# -- broker ---------------------------------------------------------------------------------


async def reset_broker(url: str, services: Iterable[str]) -> list[str]:
    """Delete every queue of the topology (what a former test left must not reach this one).

    Returns the queues that existed.
    """
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        return await delete_queues(connection, topology_queues(services))


@contextlib.asynccontextmanager
async def client_broker(url: str):
    """The SDK's broker, as a service starting sagas would use it, with the topology declared."""
    broker = await RabbitBroker.connect(url, name="sagawire-e2e-test")
    try:
        await broker.declare_topology(SERVICES)
        yield broker
    finally:
        await broker.close()


async def start_orders(
    broker: RabbitBroker, order_ids: Iterable[str], *, parallel: int = 50
) -> None:
    """Start one order saga per id (saga id = order id) through the control queue."""
    client = SagaClient(broker)
    limit = asyncio.Semaphore(parallel)

    async def start(order_id: str) -> None:
        async with limit:
            await client.start_saga("order", example_order(order_id), saga_id=order_id)

    await asyncio.gather(*(start(order_id) for order_id in order_ids))


async def publish_raw(
    url: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    type: str,  # noqa: A002 - the AMQP property
    correlation_id: str | None = None,
    headers: dict[str, Any] | None = None,
    content_type: str = p.CONTENT_TYPE_JSON,
) -> str:
    """Publish exactly these bytes and properties, bypassing the SDK's encoding, confirmed;
    returns the message id."""
    message_id = p.new_message_id()
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(
            aio_pika.Message(
                body=body,
                headers=headers or {},
                content_type=content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
                correlation_id=correlation_id,
                type=type,
            ),
            routing_key,
            mandatory=True,
        )
    return message_id


def header_text(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    type: str | None
    headers: dict[str, Any]

    @property
    def reason(self) -> str:
        return header_text(self.headers, p.H_DEAD_LETTER_REASON) or ""


async def read_queue(
    url: str,
    queue: str,
    *,
    expect: int,
    timeout: float,  # noqa: ASYNC109
) -> list[DeadLetter]:
    """Take (and ack) messages from `queue` until `expect` came or `timeout` seconds passed."""
    taken: list[DeadLetter] = []
    deadline = time.monotonic() + timeout
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=True)
        while len(taken) < expect and time.monotonic() < deadline:
            incoming = await source.get(no_ack=False, fail=False, timeout=5)
            if incoming is None:
                await asyncio.sleep(0.1)
                continue
            taken.append(DeadLetter(incoming.message_id, incoming.type, dict(incoming.headers)))
            await incoming.ack()
    return taken


# -- store ----------------------------------------------------------------------------------


async def finished_count(store: MongoSagaStore) -> tuple[int, dict[str, int]]:
    """(finished sagas of the order machine, its sagas by status), as `sagawire stats` counts."""
    counts = (await counts_by_machine(store.database["sagas"])).get("order")
    counts = counts or {status.value: 0 for status in SagaStatus}
    return sum(counts[status] for status in FINISHED), counts


async def wait_finished(
    store: MongoSagaStore,
    total: int,
    *,
    timeout: float,  # noqa: ASYNC109
    diagnose: Callable[[], str] = str,
    at_least: int | None = None,
    interval: float = 1.0,
) -> dict[str, int]:
    """Poll the store until `at_least` (default: all `total`) sagas reached an outcome."""
    wanted = total if at_least is None else at_least
    last: dict[str, int] = {}

    async def done() -> dict[str, int] | None:
        nonlocal last
        finished, last = await finished_count(store)
        return last if finished >= wanted else None

    try:
        return await wait_until(
            done,
            timeout=timeout,
            interval=interval,  # a count scans every saga on FerretDB: not too often
            what=f"{wanted} of {total} sagas finished",
            diagnose=lambda: f"store counts: {last}\n{diagnose()}",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await describe_unfinished(store)}") from None


async def describe_unfinished(store: MongoSagaStore, limit: int = 5) -> str:
    """Where the first few unfinished sagas stand: state, pending steps, last history."""
    cursor = store.database["sagas"].find(
        {"status": {"$in": ["running", "compensating"]}}, {"status": 1, "version": 1}
    )
    listed = {document["_id"]: document async for document in cursor}
    lines = [f"unfinished sagas (as the store's saga documents say): {len(listed)}"]
    for saga_id, document in list(listed.items())[:limit]:
        # On FerretDB `load` reads the newest version claim, which may be ahead of the saga
        # document that `finished_count` reads (and repairs that document).
        saga = await store.load(saga_id)
        if saga is None:
            continue
        lines.append(
            f"  {saga_id}: saga document {document.get('status')} v{document.get('version')}; "
            "loaded:"
        )
        pending = [
            (step.step, step.attempt, step.waiting, step.deadline.isoformat())
            for step in saga.pending
        ]
        history = [(h.at.time().isoformat(), h.event, h.step, h.attempt) for h in saga.history]
        lines.append(
            f"    {saga.status.value} in {saga.state} v{saga.version}, deadline "
            f"{saga.deadline}, outbox {len(saga.outbox)}, pending {pending}, "
            f"history {history[-6:]}"
        )
    return "\n".join(lines)


async def load_sagas(store: MongoSagaStore, saga_ids: Iterable[str]) -> dict[str, Saga | None]:
    """Each saga as stored (`load` reads the newest version, also on FerretDB)."""
    ids = list(saga_ids)
    limit = asyncio.Semaphore(20)

    async def load(saga_id: str) -> Saga | None:
        async with limit:
            return await store.load(saga_id)

    return dict(zip(ids, await asyncio.gather(*(load(i) for i in ids)), strict=True))


# -- expected outcomes ----------------------------------------------------------------------

PLAN = FaultPlan(rate=FAILURE_RATE)
SCALE_VARIABLE = "SAGAWIRE_E2E_SCALE"


def scaled(count: int) -> int:
    """`count` sagas times `SAGAWIRE_E2E_SCALE` (default 1: the issue's numbers), at least 30."""
    scale = float(os.environ.get(SCALE_VARIABLE) or 1)
    return max(round(count * scale), 30)


def finish_timeout(count: int) -> float:
    """Seconds allowed for `count` sagas to finish: generous for a slow FerretDB."""
    return 60 + 0.6 * count


def order_ids(prefix: str, count: int) -> list[str]:
    """Deterministic ids: the same fault mix on every run."""
    return [f"{prefix}-{n:04d}" for n in range(count)]


def expected_outcome(failure: str | None) -> str:
    return "succeeded" if failure is None else "compensated"


def expected_keys(saga_id: str, failure: str | None) -> dict[str, set[str]]:
    """The idempotency keys each service applies for a saga that fails at `failure` (or not).

    A service that rejects its step applies nothing and is not compensated; the steps done
    before it are compensated, newest first. A step that timed out (`failure` names its service)
    counts as failed there.
    """
    keys: dict[str, set[str]] = {service: set() for service in SERVICES}
    if failure == "payment":
        return keys
    keys["payment"].add(f"{saga_id}:execute_payment:1")
    if failure is not None:
        keys["payment"].add(f"{saga_id}:compensate:execute_payment:1")
    if failure == "stock":
        return keys
    keys["stock"].add(f"{saga_id}:prepare_order:1")
    if failure is not None:
        keys["stock"].add(f"{saga_id}:compensate:prepare_order:1")
        return keys
    keys["delivery"].add(f"{saga_id}:deliver_order:1")
    return keys


def outcome_problems(
    sagas: Mapping[str, Saga | None], failures: Mapping[str, str | None]
) -> list[str]:
    problems = []
    for saga_id, failure in failures.items():
        saga = sagas.get(saga_id)
        want = expected_outcome(failure)
        if saga is None:
            problems.append(f"{saga_id}: not in the store (expected {want})")
        elif saga.status.value != want:
            problems.append(
                f"{saga_id}: {saga.status.value} in state {saga.state} "
                f"(expected {want}, fails at {failure}); last history: "
                f"{[(h.event, h.step, h.attempt) for h in saga.history[-4:]]}"
            )
    return problems


def ledger_problems(
    applied: Mapping[str, Mapping[str, int]], failures: Mapping[str, str | None]
) -> list[str]:
    """Every key applied at most once, and exactly the expected ones applied, per service."""
    problems = []
    for service, counts in applied.items():
        problems += [
            f"{service}: {key} applied {n} times" for key, n in sorted(counts.items()) if n > 1
        ]
    expected: dict[str, set[str]] = {service: set() for service in applied}
    for saga_id, failure in failures.items():
        for service, keys in expected_keys(saga_id, failure).items():
            if service in expected:
                expected[service] |= keys
    for service, counts in applied.items():
        missing = sorted(expected[service] - set(counts))
        extra = sorted(set(counts) - expected[service])
        if missing:
            problems.append(f"{service}: {len(missing)} keys never applied, e.g. {missing[:5]}")
        if extra:
            problems.append(f"{service}: {len(extra)} keys applied unexpectedly, e.g. {extra[:5]}")
    return problems


def shorten(problems: list[str], limit: int = 15) -> str:
    more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
    return "\n".join(problems[:limit]) + more


# -- the shop -------------------------------------------------------------------------------


async def start_shop(
    processes: ProcessGroup,
    mongodb_url: str,
    *,
    daemons: int = 1,
    machines: Path = ORDER_MACHINE,
    failure_rate: float = FAILURE_RATE,
    broken: Mapping[str, Iterable[str]] | None = None,
) -> tuple[list[Daemon], dict[str, Service]]:
    """Daemons and the three participant services, each a process of its own, all ready."""
    started = [
        processes.daemon(mongodb_url, machines=machines, name=f"daemon{n + 1}")
        for n in range(daemons)
    ]
    services = {
        name: processes.service(
            name, failure_rate=failure_rate, broken=(broken or {}).get(name, ())
        )
        for name in SERVICES
    }
    await asyncio.gather(
        *(wait_ready(d) for d in started), *(wait_serving(s) for s in services.values())
    )
    return started, services


async def check_outcomes(
    store: MongoSagaStore,
    processes: ProcessGroup,
    services: Mapping[str, Service],
    failures: Mapping[str, str | None],
) -> dict[str, Saga | None]:
    """Every saga has the outcome its failure says, and each participant applied exactly the
    expected idempotency keys, each once. The services are stopped first: their ledgers are then
    final (written at exit)."""
    sagas = await load_sagas(store, failures)
    problems = outcome_problems(sagas, failures)
    for service in services.values():
        service.stop()
    applied = {name: service.read_ledger()["applied"] for name, service in services.items()}
    problems += ledger_problems(applied, failures)
    assert not problems, f"{shorten(problems)}\n{processes.tails()}"
    return sagas


def run_figures(
    sagas: Mapping[str, Saga | None], began: float, commands: float
) -> tuple[float, float, int]:
    """(seconds from the first start to the last finish, steps per second, saga versions)."""
    finished = [s.finished_at.timestamp() for s in sagas.values() if s and s.finished_at]
    wall = max(finished) - began
    versions = sum(s.version for s in sagas.values() if s)
    return wall, commands / wall, versions


def timed_out_steps(sagas: Mapping[str, Saga | None]) -> int:
    """How many step attempts timed out (and were retried or compensated), over all sagas."""
    return sum(1 for s in sagas.values() if s for h in s.history if h.event == "timed_out")
