"""`sagawire demo`: the order saga end to end in one process, no servers needed."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.cli.app import app
from orchestrator.cli.common import load_registry
from orchestrator.core.machines import MachineRegistry
from orchestrator.demo.run import DEMO_MACHINE, DemoReport, run_demo, server_infra
from orchestrator.errors import ConfigurationError
from orchestrator.logs import redact
from participants_sdk.errors import BrokerError

CHECKOUT_MACHINES = Path(__file__).resolve().parents[2] / "machines"
"""The machines folder of the Sagawire checkout this runs from, if it runs from one."""
INSTALLED_MACHINES = Path(sys.prefix) / "share" / "sagawire" / "machines"
"""Where an installed wheel puts the same files (`data-files` in pyproject.toml)."""


def default_machines_path() -> Path:
    """`./machines` when there is one, else the Sagawire checkout's, else the installed ones."""
    for candidate in (Path("machines"), CHECKOUT_MACHINES):
        if candidate.is_dir():
            return candidate
    return INSTALLED_MACHINES


def _load(path: Path) -> MachineRegistry:
    registry = load_registry(path)
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
        Path | None,
        typer.Option(help="Machines folder (default: ./machines, else the ones Sagawire ships)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the outcome counts as JSON, no progress bar.")
    ] = False,
    amqp_url: Annotated[
        str | None,
        typer.Option(help="Run over this RabbitMQ instead of in memory (with --mongodb-url)."),
    ] = None,
    mongodb_url: Annotated[
        str | None,
        typer.Option(help="Keep the sagas in this MongoDB instead of in memory (with --amqp-url)."),
    ] = None,
) -> None:
    """Run order sagas against demo payment, stock and delivery services, all in this process.

    About --failure-rate of the sagas meet a business failure at a random step and are compensated (refund, release stock). Exits 1 if any saga is stuck or failed.
    """  # noqa: E501 - typer keeps line breaks: one paragraph, one line
    registry = _load(machines or default_machines_path())
    if (amqp_url is None) != (mongodb_url is None):
        typer.echo("error: give both --amqp-url and --mongodb-url, or neither", err=True)
        raise typer.Exit(code=2)

    async def demo_run(on_progress: Callable[[int], None] | None = None) -> DemoReport:
        infra = None
        if amqp_url is not None and mongodb_url is not None:
            infra = await server_infra(amqp_url, mongodb_url)
        return await run_demo(
            registry,
            sagas=sagas,
            failure_rate=failure_rate,
            seed=seed,
            finish_within=timeout,
            on_progress=on_progress,
            infra=infra,
        )

    try:
        report = _report(demo_run, as_json=as_json, sagas=sagas)
    except (ConfigurationError, BrokerError) as exc:
        typer.echo(f"error: {redact(str(exc))}", err=True)
        raise typer.Exit(code=1) from None
    if report.stuck or report.failed or report.applied_twice:
        sys.exit(1)


def _report(
    demo_run: Callable[..., Coroutine[Any, Any, DemoReport]], *, as_json: bool, sagas: int
) -> DemoReport:
    if as_json:
        report = asyncio.run(demo_run())
        typer.echo(json.dumps(report.as_json()))
        return report
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
        report = asyncio.run(demo_run(lambda done: progress.update(task, completed=done)))
    console.print(_summary(report))
    return report
