"""The demo shop's participant services as a program of their own, over RabbitMQ.

    python -m orchestrator.demo.service payment stock delivery --failure-rate 0.2

Runs until SIGTERM or Ctrl-C. With `--ledger FILE` it keeps FILE up to date with the effects it
applied per idempotency key, which is how the end-to-end tests count "applied at most once".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.demo.participants import DemoShop, FaultPlan, Ledger
from orchestrator.logs import redact, setup_logging
from participants_sdk.errors import BrokerError
from participants_sdk.rabbitmq import RabbitBroker

cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def write_ledger(path: Path, services: list[str], ledger: Ledger) -> None:
    body = {"services": services, "applied": dict(ledger.applied), "rejected": ledger.rejected}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(path)  # readers never see half a file


async def serve(
    services: list[str],
    amqp_url: str,
    *,
    failure_rate: float,
    broken: frozenset[str],
    ledger_path: Path | None,
    queue_type: str,
) -> None:
    ledger = Ledger()
    shop = DemoShop(FaultPlan(rate=failure_rate), ledger, broken=broken)
    participants = shop.services(tuple(services))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    broker = await RabbitBroker.connect(
        amqp_url, queue_type=queue_type, name=f"sagawire-demo-{'-'.join(services)}"
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            for participant in participants:
                await stack.enter_async_context(participant.serve(broker))
            print(f"serving {', '.join(services)}", flush=True)  # noqa: T201 - tests wait for it
            while not stop.is_set():
                if ledger_path is not None:
                    write_ledger(ledger_path, services, ledger)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
    finally:
        await broker.close()
        if ledger_path is not None:
            write_ledger(ledger_path, services, ledger)


@cli.command()
def main(
    services: Annotated[list[str], typer.Argument(help="payment, stock and/or delivery")],
    amqp_url: Annotated[str, typer.Option(envvar="SAGAWIRE_AMQP_URL")] = (
        "amqp://guest:guest@localhost:5672/"
    ),
    failure_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.2,
    broken: Annotated[
        list[str] | None, typer.Option(help="A command whose handler always raises.")
    ] = None,
    ledger: Annotated[Path | None, typer.Option(help="Keep the applied effects here.")] = None,
    queue_type: Annotated[str, typer.Option(envvar="SAGAWIRE_QUEUE_TYPE")] = "quorum",
) -> None:
    """Serve the demo shop's commands: take payments, reserve stock, deliver orders."""
    setup_logging(os.environ.get("SAGAWIRE_LOG_LEVEL", "WARNING"))
    try:
        asyncio.run(
            serve(
                services,
                amqp_url,
                failure_rate=failure_rate,
                broken=frozenset(broken or ()),
                ledger_path=ledger,
                queue_type=queue_type,
            )
        )
    except (BrokerError, OSError, ValueError) as exc:
        typer.echo(f"error: {redact(str(exc))}", err=True)
        raise typer.Exit(code=1) from None


if __name__ == "__main__":
    cli()
