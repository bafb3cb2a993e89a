"""`sagawire stats`: per machine, sagas by status and outcome, and step latency percentiles."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.cli.app import app
from orchestrator.cli.common import AsJson, MongoUrl, with_store
from orchestrator.core.saga import SagaStatus

if TYPE_CHECKING:
    from orchestrator.adapters.mongo import MongoSagaStore


@app.command(
    epilog=(
        "Examples:\n\n  sagawire stats\n\n  sagawire stats --machine order --sample 5000 --json"
    ),
)
def stats(
    machine: Annotated[str | None, typer.Option(help="Only this machine.")] = None,
    sample: Annotated[
        int,
        typer.Option(
            help="Latencies come from the histories of this many sagas updated last.", min=1
        ),
    ] = 1000,
    mongodb_url: MongoUrl = None,
    as_json: AsJson = False,
) -> None:
    """Per machine: sagas by status and outcome; step latency (command sent to reply) p50/p95/p99.

    Exits 0; 1 when MongoDB cannot be reached.
    """
    from orchestrator.adapters.mongo import latency_ms  # noqa: PLC0415 - light CLI start

    async def gather(
        store: MongoSagaStore,
    ) -> tuple[dict[str, dict[str, int]], dict[str, list[float]]]:
        return await store.queries.counts_by_machine(), await store.queries.step_latencies(
            sample=sample, machine=machine
        )

    counts, latencies = with_store(mongodb_url, gather)
    names = sorted(name for name in set(counts) | set(latencies) if machine in (None, name))
    report: dict[str, dict[str, Any]] = {}
    for name in names:
        steps = latencies.get(name, [])
        report[name] = {
            "sagas": counts.get(name, {status.value: 0 for status in SagaStatus}),
            "step_latency_ms": latency_ms(steps),
            "steps_sampled": len(steps),
        }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    if not report:
        typer.echo("no sagas yet" + (f" of machine {machine!r}" if machine else ""))
        return
    table = Table(
        "machine", *(status.value for status in SagaStatus), "p50 ms", "p95 ms", "p99 ms", "steps"
    )
    for name, row in report.items():
        millis = list(row["step_latency_ms"].values())  # p50, p95, p99
        table.add_row(
            name,
            *(str(row["sagas"][status.value]) for status in SagaStatus),
            *("-" if value is None else f"{value:g}" for value in millis),
            str(row["steps_sampled"]),
        )
    Console(width=160).print(table)
