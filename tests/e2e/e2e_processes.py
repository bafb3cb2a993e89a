"""The processes of an end-to-end test: the daemon, the participant services and the load
generator, each a `ManagedProcess` with its stdout and stderr in files under the test's
`tmp_path`, all stopped by `ProcessGroup.close()` (SIGTERM, then SIGKILL) at teardown; the
waits for them (`/readyz`, the participants' "serving" line), and `start_shop` for the lot.
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

from e2e_http import http_get, parse_metrics

from orchestrator.demo.journal import applied_counts

REPO = Path(__file__).resolve().parents[2]
ORDER_MACHINE = REPO / "machines" / "order.yaml"
"""The production order machine: 30 s step timeouts ride out a broker restart."""
E2E_MACHINES = Path(__file__).resolve().parent / "machines"
"""The order machine with a 3 s deliver_order timeout, for the timeout scenario."""
NODE_PARTICIPANT = REPO / "examples" / "node-participant"
"""The `stock` service in Node.js (`stock.mjs`), with its npm dependencies in `node_modules`."""
SERVICES = ("payment", "stock", "delivery")
FAILURE_RATE = 0.2
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
        self,
        kind: type[P],
        name: str,
        args: list[str],
        env: Mapping[str, str],
        *,
        executable: str = sys.executable,
        **extra: Any,
    ) -> P:
        """Start `executable args` (by default this Python) in the checkout, with `env` added
        to ours."""
        name = self._unique(name)
        stdout, stderr = self.workdir / f"{name}.out", self.workdir / f"{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            popen = subprocess.Popen(  # noqa: S603 - our own programs and arguments
                [executable, *args],
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

    def node_service(
        self,
        node: str,
        *,
        name: str = "stock",
        failure_rate: float = FAILURE_RATE,
        handler_delay_ms: int = 0,
        prefetch: int = 16,
    ) -> Service:
        """The Node.js `stock` service of examples/node-participant, run by the `node`
        executable, keeping its journal in a file (the same file for a service started again
        under the same name); JSON logs on its stderr."""
        ledger = self.workdir / f"{name}.journal"
        env = {
            "SAGAWIRE_AMQP_URL": self.amqp_url,
            "STOCK_JOURNAL": str(ledger),
            "STOCK_FAILURE_RATE": str(failure_rate),
            "STOCK_HANDLER_DELAY_MS": str(handler_delay_ms),
            "STOCK_PREFETCH": str(prefetch),
        }
        script = NODE_PARTICIPANT / "stock.mjs"
        return self._spawn(Service, name, [str(script)], env, executable=node, ledger=ledger)

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


# -- waits ----------------------------------------------------------------------------------


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
