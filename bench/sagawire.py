"""Sagawire end to end: the daemon, the participants and the load generator as processes.

`Rig` starts the daemon (`python -m orchestrator run`, on the memory or the MongoDB store) and
one process serving the three demo services with no business failures, on a fresh set of
queues. `saturate` starts sagas as fast as the load generator can and reports steps and sagas
per second; `offer` starts them at a fixed rate (open loop) and reports step and saga latency
percentiles from the daemon's histograms. Both report CPU seconds per step of each process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aio_pika

from bench.common import (
    cpu_seconds,
    finished_sagas,
    histogram,
    minus,
    minus_cpu,
    parse_metrics,
    quantile,
    rss_bytes,
    server_cpu_seconds,
)
from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.testing.backends import delete_queues, topology_queues

ROOT = Path(__file__).resolve().parents[1]
MACHINES = ROOT / "machines" / "order.yaml"
STEPS_PER_SAGA = 3  # the order saga without failures: payment, stock, delivery
SERVICES = ("payment", "stock", "delivery")


def patient_machines(directory: Path) -> Path:
    """The order machine with every step timeout an hour long, written into `directory`: sagas
    held in flight with nobody answering must not all time out and retry while they are."""
    directory.mkdir(parents=True, exist_ok=True)
    text = re.sub(r"^(\s*timeout:) \S+", r"\1 1h", MACHINES.read_text(), flags=re.MULTILINE)
    path = directory / MACHINES.name
    path.write_text(text, encoding="utf-8")
    return path


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Rig:
    def __init__(
        self,
        amqp_url: str,
        mongodb_url: str,
        store: str,
        workdir: Path,
        *,
        machines: Path = MACHINES,
    ) -> None:
        self.machines = machines
        self.amqp_url = amqp_url
        self.mongodb_url = mongodb_url.rstrip("/") + f"/sagawire_bench_{uuid.uuid4().hex[:8]}"
        self.store = store
        self.workdir = workdir
        self.port = _free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._batch = 0

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.workdir / f"{name}.out").open("wb")
        err = (self.workdir / f"{name}.err").open("wb")
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our modules
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=out,
            stderr=err,
        )
        self.processes[name] = process
        return process

    async def start(self, *, participants: bool = True, daemon: bool = True) -> None:
        """Fresh queues, then the processes asked for, once they serve; stopped again when they
        do not, so that none is left to take a later run's messages."""
        try:
            await self._start(participants=participants, daemon=daemon)
        except BaseException:
            self.stop()
            raise

    async def _start(self, *, participants: bool, daemon: bool) -> None:
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            await delete_queues(connection, topology_queues(SERVICES))
        if participants:
            self._spawn(
                "participants",
                ["-m", "orchestrator.demo.service", *SERVICES, "--failure-rate", "0"],
                {"SAGAWIRE_AMQP_URL": self.amqp_url},
            )
        if daemon:
            self.start_daemon()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = not daemon or await asyncio.to_thread(self._get, "/readyz") is not None
            out = self.workdir / "participants.out"
            serving = not participants or "serving" in out.read_text()
            if ready and serving:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the rig did not start; see {self.workdir}")

    def start_daemon(self) -> None:
        self._spawn(
            "daemon",
            ["-m", "orchestrator", "run"],
            {
                "SAGAWIRE_AMQP_URL": self.amqp_url,
                "SAGAWIRE_MONGODB_URL": self.mongodb_url,
                "SAGAWIRE_STORE": self.store,
                "SAGAWIRE_MACHINES": str(self.machines),
                "SAGAWIRE_HTTP_PORT": str(self.port),
                "SAGAWIRE_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
                "SAGAWIRE_MAX_LIVE_ACTORS": "200000",
                # Every saga stays an actor in memory for as long as the bench runs.
                "SAGAWIRE_PASSIVATE_AFTER": "3600",
            },
        )

    async def ready(self) -> bool:
        """The daemon's readiness probe answers: it consumes."""
        return await asyncio.to_thread(self._get, "/readyz") is not None

    def _get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return str(r.read().decode())
        except OSError:
            return None

    async def metrics(self) -> dict[str, float]:
        metrics = await self.metrics_or_none()
        if metrics is None:
            raise RuntimeError("the daemon's /metrics did not answer")
        return metrics

    async def metrics_or_none(self) -> dict[str, float] | None:
        """The daemon's metrics, or None while its HTTP server is not up yet."""
        text = await asyncio.to_thread(self._get, "/metrics")
        return None if text is None else parse_metrics(text)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the rig's live processes and of the servers."""
        ours = {name: cpu_seconds(p.pid) for name, p in self.processes.items() if p.poll() is None}
        return {**ours, **server_cpu_seconds()}

    def rss(self, name: str) -> int:
        return rss_bytes(self.processes[name].pid)

    async def finished(self) -> float:
        """Sagas the daemon has finished since it started."""
        return finished_sagas(await self.metrics())

    async def run_load(self, count: int, rate: float) -> dict[str, Any]:
        """Start `count` sagas at `rate` per second; wait until all finished. Figures."""
        self._batch += 1
        done_before = await self.finished()
        before, cpu_before = await self.metrics(), self.cpu()
        began = time.monotonic()
        load = self._spawn(
            f"load{self._batch}",
            [
                *("-m", "orchestrator.demo.load", "--prefix", f"b{self._batch}"),
                *("--count", str(count), "--rate", str(rate)),
            ],
            {"SAGAWIRE_AMQP_URL": self.amqp_url},
        )
        load_cpu = 0.0
        while await self.finished() < done_before + count:
            if load.poll() is None:
                load_cpu = cpu_seconds(load.pid)
            if time.monotonic() - began > 600:
                raise RuntimeError(f"{count} sagas did not finish in 600 s; see {self.workdir}")
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - began
        after, cpu_after = await self.metrics(), self.cpu()
        load.wait(timeout=60)
        steps = count * STEPS_PER_SAGA
        cpu = minus_cpu(cpu_after, cpu_before)
        cpu["load generator"] = load_cpu
        step_latency = minus(
            histogram(after, "sagawire_step_latency_seconds"),
            histogram(before, "sagawire_step_latency_seconds"),
        )
        saga_latency = minus(
            histogram(after, "sagawire_saga_duration_seconds"),
            histogram(before, "sagawire_saga_duration_seconds"),
        )
        return {
            "sagas": count,
            "offered_sagas_per_s": rate,
            "seconds": round(elapsed, 3),
            "steps_per_s": round(steps / elapsed, 1),
            "sagas_per_s": round(count / elapsed, 1),
            "cpu_s_per_step": {k: round(v / steps, 6) for k, v in cpu.items()},
            "step_ms": _percentiles(step_latency),
            "saga_ms": _percentiles(saga_latency),
        }

    async def hold(self, counts: tuple[int, ...]) -> list[dict[str, Any]]:
        """Start sagas that stay in flight (no participant answers) up to each of `counts`, and
        the daemon's resident memory per live saga there, over what it held before."""
        self._batch += 1
        await asyncio.sleep(1)
        before = self.rss("daemon")
        began = time.monotonic()
        self._spawn(
            f"load{self._batch}",
            [
                *("-m", "orchestrator.demo.load", "--prefix", f"h{self._batch}"),
                *("--count", str(max(counts)), "--rate", "1000000"),
            ],
            {"SAGAWIRE_AMQP_URL": self.amqp_url},
        )
        held = []
        for count in sorted(counts):
            # /metrics may not answer within its timeout while the daemon's loop is swamped
            # with starts: that is a poll missed, not a failure.
            while ((await self.metrics_or_none()) or {}).get("sagawire_live_actors", 0) < count:
                if time.monotonic() - began > 900:
                    raise RuntimeError(f"{count} sagas were not live in 900 s; see {self.workdir}")
                await asyncio.sleep(0.2)
            rss = self.rss("daemon")
            held.append(
                {
                    "sagas_in_flight": count,
                    "seconds_to_start": round(time.monotonic() - began, 1),
                    "rss_before_bytes": before,
                    "rss_bytes": rss,
                    "rss_bytes_per_saga": round((rss - before) / count),
                }
            )
        return held

    async def drop_database(self) -> None:
        """Drop the rig's database (FerretDB keeps a file per database)."""
        if self.store != "mongodb":
            return
        store = await MongoSagaStore.connect(self.mongodb_url)
        try:
            await store.client.drop_database(store.database.name)
        finally:
            await store.close()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
            if process.poll() is None:
                process.kill()
                process.wait()


def _percentiles(buckets: list[tuple[float, float]]) -> dict[str, float | None]:
    result: dict[str, float | None] = {}
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value = quantile(buckets, q)
        result[label] = None if value is None else round(value * 1000, 1)
    return result


def dumps(value: object) -> str:
    return json.dumps(value, indent=2)
