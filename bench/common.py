"""What the benchmarks share: process figures from /proc, Prometheus histograms, payloads."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Shaped like the order machine's commands and replies: a JSON object of about 300 bytes and
# Sagawire's seven headers.
PAYLOAD = {
    "order_id": "o-0000000",
    "customer_id": "c-0000000",
    "amount": 42.5,
    "items": [{"sku": "sku-1", "quantity": 2}, {"sku": "sku-2", "quantity": 1}],
    "address": "1 Main St, Springfield, 12345",
    "note": "x" * 120,
}
HEADERS = {
    "x-sagawire-machine": "order",
    "x-sagawire-version": 1,
    "x-sagawire-step": "execute_payment",
    "x-sagawire-visit": 1,
    "x-sagawire-attempt": 1,
    "x-sagawire-idempotency-key": "o-0000000:execute_payment:1",
    "x-sagawire-service": "payment",
}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


SERVERS = {"beam.smp": "rabbitmq", "ferretdb": "ferretdb", "mongod": "mongod"}
"""Process names (`/proc/<pid>/comm`) of the servers, and what the reports call them."""


def server_pids() -> dict[str, int]:
    """The pids of the RabbitMQ and FerretDB servers running on this machine.

    Of several processes with a server's name the oldest is the server: `rabbitmqctl` runs in a
    `beam.smp` of its own for a moment, as when `make bench` has just checked the broker.
    """
    found: dict[str, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
                started = int((entry / "stat").read_text().rpartition(")")[2].split()[19])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if name in SERVERS and (
                SERVERS[name] not in found or started < found[SERVERS[name]][0]
            ):
                found[SERVERS[name]] = (started, int(entry.name))
    return {server: pid for server, (_, pid) in found.items()}


def server_cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of each server running on this machine, by what the reports call it."""
    return {name: cpu_seconds(pid) for name, pid in server_pids().items()}


QUIET_CPU_SHARE = 0.05
"""A server is quiet below this share of one core (RabbitMQ idles at about 0.015)."""


def wait_until_servers_quiet(limit_s: float = 90.0) -> float:
    """Wait until every server uses less than `QUIET_CPU_SHARE` of a core over a second, at
    most `limit_s`; the seconds waited.

    After a run that held 100,000 messages, RabbitMQ goes on working for a while (deleting
    queues, compacting the logs of quorum queues): a measurement must not share the CPUs with
    the leftovers of another.
    """
    began = time.monotonic()
    while True:
        before = server_cpu_seconds()
        time.sleep(1.0)
        used = minus_cpu(server_cpu_seconds(), before)
        if all(seconds < QUIET_CPU_SHARE for seconds in used.values()):
            return round(time.monotonic() - began - 1.0, 1)
        if time.monotonic() - began >= limit_s:
            return round(time.monotonic() - began, 1)


def minus_cpu(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds spent between two readings, by process (those in both)."""
    return {name: after[name] - before[name] for name in after if name in before}


def finished_sagas(metrics: Mapping[str, float]) -> float:
    """Sagas finished, whatever their outcome, from the daemon's parsed /metrics."""
    return sum(v for k, v in metrics.items() if k.startswith("sagawire_sagas_finished_total"))


def rss_bytes(pid: int) -> int:
    """Resident set size of the process now."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text: `name{labels}` exactly as written -> value (comments skipped)."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


_LE: Final = re.compile(r'[{,]le="([^"]+)"')
"""A bucket's upper bound among a sample's labels."""


def histogram(samples: Mapping[str, float], name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a Prometheus histogram, in order: the buckets of every
    series of `name` added up (the daemon's are labelled by machine and step)."""
    prefix = f"{name}_bucket{{"
    buckets: dict[float, float] = {}
    for key, value in samples.items():
        if key.startswith(prefix) and (found := _LE.search(key, len(prefix) - 1)) is not None:
            bound = float("inf") if found[1] == "+Inf" else float(found[1])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return sorted(buckets.items())


def minus(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The observations made between two readings of one histogram."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile, interpolated linearly inside its bucket (as Prometheus does)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return None


DATABASES: Final = ("ferretdb", "mongod")
"""The servers of `SERVERS` that are the database."""


def step_costs(memory: Mapping[str, Any], mongodb: Mapping[str, Any]) -> dict[str, float]:
    """The durable path against the memory store, from the two saturation runs of one report:
    steps/s over steps/s, and CPU milliseconds per step of the daemon and of the database."""
    memory_cpu, mongo_cpu = memory["cpu_s_per_step"], mongodb["cpu_s_per_step"]
    return {
        "ratio_mongo_vs_memory": round(mongodb["steps_per_s"] / memory["steps_per_s"], 3),
        "daemon_cpu_ms_per_step_memory": round(memory_cpu["daemon"] * 1000, 3),
        "daemon_cpu_ms_per_step_mongo": round(mongo_cpu["daemon"] * 1000, 3),
        "db_cpu_ms_per_step": round(sum(mongo_cpu.get(db, 0.0) for db in DATABASES) * 1000, 3),
    }
