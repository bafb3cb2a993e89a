"""A load generator as a process of its own: start order sagas at a steady rate (open loop).

    python -m orchestrator.demo.load --prefix run1 --count 1000 --rate 40

Saga ids are `<prefix>-0000`, `<prefix>-0001`, ...; starting is idempotent on the id, so running
it again starts nothing twice. Start `i` is sent at `i / rate` seconds after the first, whether
or not the earlier ones were answered. Prints one JSON line when done: how many, and when the
first and the last start was confirmed by the broker (epoch seconds).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Annotated

import typer

from orchestrator.demo.participants import example_order
from orchestrator.logs import redact, setup_logging
from participants_sdk.errors import BrokerError
from participants_sdk.gc_tuning import tune_gc
from participants_sdk.rabbitmq import RabbitBroker
from participants_sdk.saga_client import SagaClient

cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def saga_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n:04d}" for n in range(count)]


async def generate(amqp_url: str, prefix: str, count: int, rate: float) -> dict[str, float]:
    broker = await RabbitBroker.connect(amqp_url, name=f"sagawire-load-{prefix}")
    try:
        await broker.declare_topology([])
        client = SagaClient(broker)
        began = time.monotonic()
        confirmed: list[float] = []

        async def start(n: int, saga_id: str) -> None:
            delay = began + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await client.start_saga("order", example_order(saga_id), saga_id=saga_id)
            confirmed.append(time.time())

        await asyncio.gather(*(start(n, i) for n, i in enumerate(saga_ids(prefix, count))))
    finally:
        await broker.close()
    return {"started": len(confirmed), "first_at": min(confirmed), "last_at": max(confirmed)}


@cli.command()
def main(
    prefix: Annotated[str, typer.Option(help="Saga ids are PREFIX-0000, PREFIX-0001, ...")],
    count: Annotated[int, typer.Option(min=1, help="How many sagas to start.")],
    rate: Annotated[float, typer.Option(min=0.1, help="Starts per second.")] = 50.0,
    amqp_url: Annotated[str, typer.Option(envvar="SAGAWIRE_AMQP_URL")] = (
        "amqp://guest:guest@localhost:5672/"
    ),
) -> None:
    """Start COUNT order sagas at RATE per second and print what was started, as JSON."""
    setup_logging(os.environ.get("SAGAWIRE_LOG_LEVEL", "WARNING"))
    tune_gc()
    try:
        summary = asyncio.run(generate(amqp_url, prefix, count, rate))
    except (BrokerError, OSError) as exc:
        typer.echo(f"error: {redact(str(exc))}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(json.dumps(summary))


if __name__ == "__main__":
    cli()
