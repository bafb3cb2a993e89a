"""`sagawire demo`: the order saga end to end in one process, no servers needed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.cli.app import app
from orchestrator.demo.run import DEMO_MACHINE, DemoReport, run_demo
from orchestrator.errors import DefinitionError
from orchestrator.machines import MachineRegistry, load_machines

PACKAGED_MACHINES = Path(__file__).resolve().parents[2] / "machines"


def default_machines_path() -> Path:
    """`./machines` when there is one, else the machines folder of the Sagawire checkout."""
    local = Path("machines")
    return local if local.is_dir() else PACKAGED_MACHINES


def _load(path: Path) -> MachineRegistry:
    if not path.exists():
        typer.echo(f"error: machines folder {path} does not exist; pass --machines PATH", err=True)
        raise typer.Exit(code=2)
    try:
        registry = load_machines(path)
    except DefinitionError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(code=1) from None
    if registry.find(DEMO_MACHINE) is None:
        typer.echo(f"error: {path} has no machine {DEMO_MACHINE!r}, which the demo runs", err=True)
        raise typer.Exit(code=1)
    return registry


def _summary(report: DemoReport) -> Table:
    table = Table(title="Sagawire demo: order sagas", title_justify="left")
    table.add_column("outcome")
    table.add_column("sagas", justify="right")
    for name in ("started", "succeeded", "compensated", "failed", "aborted", "stuck"):
        table.add_row(name, str(getattr(report, name)))
    table.add_section()
    table.add_row("planned business failures", str(report.planned_failures))
    table.add_row("steps applied twice", str(report.applied_twice))
    table.add_row("dead-lettered messages", str(report.dead_lettered))
    table.add_row("commands sent", str(report.commands))
    rate = report.commands / report.elapsed_s if report.elapsed_s else 0.0
    table.add_row("elapsed", f"{report.elapsed_s:.2f} s ({rate:,.0f} commands/s)")
    return table


@app.command(
    epilog=(
        "Examples:\n\n  sagawire demo\n\n  sagawire demo --sagas 500 --failure-rate 0.2 --json"
    ),
)
def demo(
    sagas: Annotated[int, typer.Option(min=0, help="How many order sagas to run.")] = 200,
    failure_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of sagas that meet a business failure."),
    ] = 0.2,
    seed: Annotated[int | None, typer.Option(help="Seed for repeatable data and failures.")] = None,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for every saga to finish.")
    ] = 120.0,
    machines: Annotated[
        Path | None, typer.Option(help="Machines folder (default: ./machines).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the outcome counts as JSON, no progress bar.")
    ] = False,
) -> None:
    """Run order sagas against demo payment, stock and delivery services, all in this process.

    About --failure-rate of the sagas meet a business failure at a random step and are compensated (refund, release stock). Exits 1 if any saga is stuck or failed.
    """  # noqa: E501 - typer keeps line breaks: one paragraph, one line
    registry = _load(machines or default_machines_path())
    if as_json:
        report = asyncio.run(
            run_demo(
                registry, sagas=sagas, failure_rate=failure_rate, seed=seed, finish_within=timeout
            )
        )
        typer.echo(json.dumps(report.as_json()))
    else:
        console = Console()
        with Progress(
            TextColumn("[bold]sagas finished"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("sagas", total=sagas)
            report = asyncio.run(
                run_demo(
                    registry,
                    sagas=sagas,
                    failure_rate=failure_rate,
                    seed=seed,
                    finish_within=timeout,
                    on_progress=lambda done: progress.update(task, completed=done),
                )
            )
        console.print(_summary(report))
    if report.stuck or report.failed or report.applied_twice:
        sys.exit(1)
