"""Run every benchmark in one go on this machine; print a table, write reports/bench.json.

    python -m bench.run            the full run (make bench)
    python -m bench.run --quick    fewer sagas, shorter load levels (make bench-quick)

In order: (a) the raw aio-pika round trip, the broker's limit, and the same on Sagawire's queue
layout with a start message per chain (a figure for comparison, not the limit); (b) the store's
versioned save alone, the database's limit; (c) Sagawire end to end on the memory store and on
the MongoDB store: steps per second at saturation, then latency at 25/50/75/90% of that load,
offered open loop. (a) runs again after the memory store's (c), and the baseline is the mean of
the two: the machine's speed drifts during a run, and so it weighs on both sides of the ratio
alike. Then the daemon's memory with 10,000 and 100,000 sagas in flight, and the time
from a restart with 100,000 in flight to the first completion (`bench.restart`). Every figure
comes from this run, so the ratios compare like with like. Before (a), (b) and each (c) the run
waits until RabbitMQ and FerretDB are idle, so that none measures the leftovers of another.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    cpu_seconds,
    minus_cpu,
    server_cpu_seconds,
    step_costs,
    wait_until_servers_quiet,
)
from bench.restart import restart
from bench.sagawire import ROOT, Rig, patient_machines
from tests.services import service_urls

LEVELS = (0.25, 0.5, 0.75, 0.9)


@dataclasses.dataclass(frozen=True)
class Sizes:
    saturation_sagas: dict[str, int]
    level_seconds: float
    in_flight: tuple[int, ...]
    restart_in_flight: int
    restart_unpublished: int

    @property
    def raw_chains(self) -> int:
        """As many chains of three round trips as the memory store's saturation run has sagas,
        all offered at once as there: the same in-flight count."""
        return self.saturation_sagas["memory"]

    @property
    def store_saves(self) -> int:
        """As many saves as the MongoDB run makes (insert, then four saves per saga): on
        FerretDB a save slows down as the database grows, so equal sizes compare fairly."""
        return 4 * self.saturation_sagas["mongodb"]

    @classmethod
    def of(cls, *, quick: bool) -> Sizes:
        if quick:
            return cls(
                {"memory": 600, "mongodb": 300},
                level_seconds=4,
                in_flight=(2000,),
                restart_in_flight=5000,
                restart_unpublished=50,
            )
        return cls(
            {"memory": 3000, "mongodb": 1000},
            level_seconds=15,
            in_flight=(10_000, 100_000),
            restart_in_flight=100_000,
            restart_unpublished=200,
        )


def _python(*args: str, timeout: float) -> dict[str, Any]:
    result = subprocess.run(  # noqa: S603 - our interpreter, our modules
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def raw_roundtrip(
    amqp_url: str, chains: int, workdir: Path, *, sagawire_layout: bool = False
) -> dict[str, Any]:
    """(a): `chains` chains of three round trips, all in flight at once. With
    `sagawire_layout`, on Sagawire's queues (a command and a reply queue for each of three
    services) and with a start message before each chain, as a saga's start."""
    layout = ["--services", "3", "--start"] if sagawire_layout else []
    with (workdir / "raw-participant.out").open("wb") as out:
        participant = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bench.raw", "participant", amqp_url, *layout],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "serving" not in (workdir / "raw-participant.out").read_text():
            if time.monotonic() > deadline or participant.poll() is not None:
                raise RuntimeError("the raw participant did not start")
            time.sleep(0.1)
        before = server_cpu_seconds()
        participant_before = cpu_seconds(participant.pid)
        figures = _python(
            *("-m", "bench.raw", "driver", amqp_url, *layout),
            *("--sagas", str(chains), "--in-flight", str(chains)),
            timeout=600,
        )
        cpu = {
            "driver": figures["driver_cpu_s"],
            "participant": cpu_seconds(participant.pid) - participant_before,
            **minus_cpu(server_cpu_seconds(), before),
        }
        figures["cpu_s_per_round_trip"] = {
            name: round(value / figures["round_trips"], 6) for name, value in cpu.items()
        }
        return figures
    finally:
        participant.send_signal(signal.SIGTERM)
        participant.wait(timeout=20)


def store_saves(mongodb_url: str, saves: int) -> dict[str, Any]:
    """(b), with the database server's CPU seconds per save."""
    before = server_cpu_seconds()
    figures = _python("-m", "bench.store", mongodb_url, "--saves", str(saves), timeout=600)
    figures["server_cpu_s_per_save"] = {
        name: round(seconds / figures["saves"], 6)
        for name, seconds in minus_cpu(server_cpu_seconds(), before).items()
    }
    return figures


async def sagawire(
    amqp_url: str, mongodb_url: str, store: str, sizes: Sizes, workdir: Path
) -> dict[str, Any]:
    rig = Rig(amqp_url, mongodb_url, store, workdir / store)
    rig.workdir.mkdir()
    await rig.start()
    try:
        await rig.run_load(50, 1000)  # warm up: connections, imports, first actors
        quiet_wait = await asyncio.to_thread(wait_until_servers_quiet)
        saturation = await rig.run_load(sizes.saturation_sagas[store], 100_000)
        levels = {}
        for share in LEVELS:
            rate = share * saturation["sagas_per_s"]
            count = max(int(rate * sizes.level_seconds), 20)
            levels[f"{round(share * 100)}%"] = await rig.run_load(count, rate)
        return {"saturation": saturation, "levels": levels, "quiet_wait_s": quiet_wait}
    finally:
        rig.stop()
        await rig.drop_database()


async def memory_per_saga(
    amqp_url: str, mongodb_url: str, counts: tuple[int, ...], workdir: Path
) -> list[dict[str, Any]]:
    """The daemon's RSS per saga in flight, on the memory store with no participant."""
    rig = Rig(
        amqp_url,
        mongodb_url,
        "memory",
        workdir / "held",
        machines=patient_machines(workdir / "patient"),
    )
    rig.workdir.mkdir()
    await rig.start(participants=False)
    try:
        return await rig.hold(counts)
    finally:
        rig.stop()


def table(report: dict[str, Any]) -> str:
    rows = [
        (
            "raw aio-pika round trips/s (a)",
            f"{report['raw_roundtrip_per_s']} (mean of "
            + " and ".join(str(r) for r in report["raw_roundtrip_runs_per_s"])
            + ")",
        ),
        ("  the same on Sagawire's queue layout", report["raw_sagawire_layout_per_s"]),
        ("store saves/s (b)", report["store_saves_per_s"]),
        ("Sagawire, memory store: steps/s (c)", report["memory_steps_per_s"]),
        ("Sagawire, MongoDB store: steps/s (c)", report["mongo_steps_per_s"]),
        ("memory vs raw", report["ratio_memory_vs_raw"]),
        ("mongo vs min(raw, store)", report["ratio_mongo_vs_limit"]),
        ("mongo vs memory", report["ratio_mongo_vs_memory"]),
        ("daemon CPU ms per step (memory)", report["daemon_cpu_ms_per_step_memory"]),
        ("daemon CPU ms per step (MongoDB)", report["daemon_cpu_ms_per_step_mongo"]),
        ("database CPU ms per step", report["db_cpu_ms_per_step"]),
        ("p99 step ms at 50% load (MongoDB)", report["p99_step_ms_at_50pct"]),
        ("p99 step ms at 50% load (memory)", report["p99_step_ms_at_50pct_memory"]),
        *(
            (
                f"daemon RSS per saga, {held['sagas_in_flight']} in flight (memory store)",
                f"{held['rss_bytes_per_saga']} B ({held['rss_bytes'] / 2**20:.0f} MiB in all)",
            )
            for held in report["in_flight"]
        ),
        (
            f"restart, {report['restart']['sagas_in_flight']} in flight: first completion s",
            report["restart_first_completion_s"],
        ),
    ]
    lines = [f"{name:<40} {value}" for name, value in rows]
    for key, name in (
        ("raw", "raw"),
        ("raw_again", "raw again"),
        ("raw_sagawire_layout", "raw, Sagawire's layout"),
    ):
        raw_cpu = report[key]["cpu_s_per_round_trip"]
        lines.append(
            f"\n{name}: CPU ms per round trip: "
            + ", ".join(f"{k} {v * 1000:.2f}" for k, v in raw_cpu.items())
        )
    for store in ("memory", "mongodb"):
        lines.append(f"\n{store}: load level -> steps/s, step p50/p95/p99 ms, saga p50/p99 ms")
        for level, figures in report["sagawire"][store]["levels"].items():
            step, saga = figures["step_ms"], figures["saga_ms"]
            lines.append(
                f"  {level:>4} ({figures['offered_sagas_per_s']:.0f} sagas/s offered): "
                f"{figures['steps_per_s']} steps/s, step {step['p50']}/{step['p95']}/"
                f"{step['p99']} ms, saga {saga['p50']}/{saga['p99']} ms"
            )
        cpu = report["sagawire"][store]["saturation"]["cpu_s_per_step"]
        lines.append(
            "  CPU ms per step: " + ", ".join(f"{k} {v * 1000:.2f}" for k, v in cpu.items())
        )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> bool:
    """Steps/s at saturation next to the limits, and step latency by load level; False
    when matplotlib is missing (`pip install -e '.[bench]'`)."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = ["raw round trips", "store saves", "Sagawire memory", "Sagawire MongoDB"]
    values = [
        report["raw_roundtrip_per_s"],
        report["store_saves_per_s"],
        report["memory_steps_per_s"],
        report["mongo_steps_per_s"],
    ]
    left.bar(names, values, color=["#888", "#888", "#2a7", "#27a"])
    left.set_ylabel("per second")
    left.set_title("Throughput at saturation")
    left.tick_params(axis="x", labelrotation=15)
    for store, colour in (("memory", "#2a7"), ("mongodb", "#27a")):
        levels = report["sagawire"][store]["levels"]
        shares = [int(level.rstrip("%")) for level in levels]
        for label, style in (("p50", ":"), ("p99", "-")):
            right.plot(
                shares,
                [levels[level]["step_ms"][label] for level in levels],
                style,
                color=colour,
                marker="o",
                label=f"{store} {label}",
            )
    right.set_xlabel("offered load, % of saturation")
    right.set_ylabel("step latency, ms")
    right.set_title("Step latency, open loop")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench.json")
    args = parser.parse_args()
    sizes = Sizes.of(quick=args.quick)
    urls = service_urls(ROOT)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sagawire-bench-") as tmp:
        workdir = Path(tmp)
        waits = {"raw": wait_until_servers_quiet()}
        raw = raw_roundtrip(urls.amqp, sizes.raw_chains, workdir)
        print(f"(a) raw round trips: {raw['per_s']:.0f}/s", flush=True)  # noqa: T201
        waits["raw_sagawire_layout"] = wait_until_servers_quiet()
        layout = raw_roundtrip(urls.amqp, sizes.raw_chains, workdir, sagawire_layout=True)
        print(  # noqa: T201
            f"(a) raw round trips on Sagawire's queue layout: {layout['per_s']:.0f}/s", flush=True
        )
        waits["store"] = wait_until_servers_quiet()
        store = store_saves(urls.mongodb, sizes.store_saves)
        print(f"(b) store saves: {store['per_s']:.0f}/s", flush=True)  # noqa: T201

        def end_to_end(kind: str) -> dict[str, Any]:
            run = asyncio.run(sagawire(urls.amqp, urls.mongodb, kind, sizes, workdir))
            steps = run["saturation"]["steps_per_s"]
            print(f"(c) Sagawire on the {kind} store: {steps} steps/s", flush=True)  # noqa: T201
            return run

        runs = {"memory": end_to_end("memory")}
        # (a) again: the memory store's run between two baselines, so that the machine's drift
        # over the run weighs on both sides of the ratio alike.
        waits["raw_again"] = wait_until_servers_quiet()
        raw_again = raw_roundtrip(urls.amqp, sizes.raw_chains, workdir)
        print(f"(a) raw round trips again: {raw_again['per_s']:.0f}/s", flush=True)  # noqa: T201
        runs["mongodb"] = end_to_end("mongodb")
        # The memory figures need no database: they are taken while the restart's database
        # is seeded, which saves a minute and a half of the run.
        restarted, held_or_none = asyncio.run(
            restart(
                urls.amqp,
                urls.mongodb,
                workdir / "restart",
                sizes.restart_in_flight,
                sizes.restart_unpublished,
                while_seeding=memory_per_saga(urls.amqp, urls.mongodb, sizes.in_flight, workdir),
            )
        )
        held = held_or_none or []
        largest = held[-1]
        print(  # noqa: T201
            f"daemon RSS per saga, {largest['sagas_in_flight']} in flight: "
            f"{largest['rss_bytes_per_saga']} B",
            flush=True,
        )
        print(  # noqa: T201
            f"restart with {restarted['sagas_in_flight']} in flight: first completion after "
            f"{restarted['start_to_first_completion_s']} s",
            flush=True,
        )
    memory = runs["memory"]["saturation"]["steps_per_s"]
    mongo = runs["mongodb"]["saturation"]["steps_per_s"]
    raw_per_s = (raw["per_s"] + raw_again["per_s"]) / 2
    report = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "variant": "quick" if args.quick else "full",
        "cpus": os.cpu_count(),
        "raw_roundtrip_per_s": round(raw_per_s, 1),
        "raw_roundtrip_runs_per_s": [round(raw["per_s"], 1), round(raw_again["per_s"], 1)],
        "raw_sagawire_layout_per_s": round(layout["per_s"], 1),
        "store_saves_per_s": round(store["per_s"], 1),
        "memory_steps_per_s": memory,
        "mongo_steps_per_s": mongo,
        "ratio_memory_vs_raw": round(memory / raw_per_s, 3),
        "ratio_mongo_vs_limit": round(mongo / min(raw_per_s, store["per_s"]), 3),
        **step_costs(runs["memory"]["saturation"], runs["mongodb"]["saturation"]),
        "p99_step_ms_at_50pct": runs["mongodb"]["levels"]["50%"]["step_ms"]["p99"],
        "p99_step_ms_at_50pct_memory": runs["memory"]["levels"]["50%"]["step_ms"]["p99"],
        "rss_bytes_per_saga": largest["rss_bytes_per_saga"],
        "rss_bytes_at_largest": largest["rss_bytes"],
        "in_flight": held,
        "restart_first_completion_s": restarted["start_to_first_completion_s"],
        "restart": restarted,
        "raw": raw,
        "raw_again": raw_again,
        "raw_sagawire_layout": layout,
        "store": store,
        "sagawire": runs,
        "quiet_waits_s": {
            **waits,
            **{f"sagawire_{kind}": run["quiet_wait_s"] for kind, run in runs.items()},
        },
        "took_s": round(time.monotonic() - began, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report), flush=True)  # noqa: T201
    png = args.out.with_suffix(".png")
    if plot(report, png):
        print(f"plotted {png}", flush=True)  # noqa: T201
    else:
        print("no plot: matplotlib is missing (pip install -e '.[bench]')", flush=True)  # noqa: T201
    print(f"\nwrote {args.out} in {report['took_s']} s", flush=True)  # noqa: T201


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
