"""The demo shop's participant services as a program of their own, over RabbitMQ.

    python -m orchestrator.demo.service payment stock delivery --failure-rate 0.2

Runs until SIGTERM or Ctrl-C. With `--journal FILE` the services remember the replies they gave
in FILE (see `orchestrator.demo.journal`), across restarts: it is their dedupe store and the
ledger the reliability tests count "applied at most once" from. Without it they remember in
memory only.

The fault options are for those tests: `--duplicate-replies` publishes every reply twice,
`--late-replies SHARE --late-by S` holds back the reply to the first attempt of SHARE of the
sagas for S seconds, and `--handler-delay S` makes every handler take S seconds (so a kill finds
some of them half-way). With `--prefetch N` (each service takes N commands at a time; 16 by
default) the two make a slow service of known throughput, N / S commands a second, whose queue
grows when commands come faster.

With `--metrics-port N` the services' `sagawire_participant_*` metrics (and the process's) are
served for Prometheus on 127.0.0.1:N/metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.registry import CollectorRegistry

from orchestrator.demo.faults import FaultyReplies
from orchestrator.demo.journal import Journal
from orchestrator.demo.participants import DemoShop, FaultPlan, Ledger
from orchestrator.logs import redact, setup_logging
from participants_sdk.errors import BrokerError
from participants_sdk.gc_tuning import tune_gc
from participants_sdk.participant import Participant
from participants_sdk.prometheus import ParticipantCollector
from participants_sdk.rabbitmq import RabbitBroker

cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


async def serve(
    services: list[str],
    amqp_url: str,
    *,
    shop: DemoShop,
    queue_type: str,
    faults: dict[str, float | bool],
    prefetch: int = 16,
    metrics_port: int = 0,
) -> None:
    participants = shop.services(tuple(services))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    rabbit = await RabbitBroker.connect(
        amqp_url, queue_type=queue_type, name=f"sagawire-demo-{'-'.join(services)}"
    )
    broker = FaultyReplies(
        rabbit,
        duplicate=bool(faults["duplicate"]),
        late_share=float(faults["late_share"]),
        late_by=float(faults["late_by"]),
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            if metrics_port:
                stack.callback(serve_metrics(participants, metrics_port))
            for participant in participants:
                await stack.enter_async_context(participant.serve(broker, prefetch=prefetch))
            print(f"serving {', '.join(services)}", flush=True)  # noqa: T201 - tests wait for it
            await stop.wait()
    finally:
        await broker.close()


def serve_metrics(participants: list[Participant], port: int) -> Callable[[], None]:
    """Serve the participants' metrics on 127.0.0.1:`port` from a thread; returns its stop."""
    registry = CollectorRegistry()
    registry.register(ParticipantCollector(*participants))
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop


@cli.command()
def main(  # noqa: PLR0913, PLR0917 - one parameter per option
    services: Annotated[list[str], typer.Argument(help="payment, stock and/or delivery")],
    amqp_url: Annotated[str, typer.Option(envvar="SAGAWIRE_AMQP_URL")] = (
        "amqp://guest:guest@localhost:5672/"
    ),
    failure_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.2,
    broken: Annotated[
        list[str] | None, typer.Option(help="A command whose handler always raises.")
    ] = None,
    journal: Annotated[
        Path | None, typer.Option(help="Remember the replies given here, across restarts.")
    ] = None,
    queue_type: Annotated[str, typer.Option(envvar="SAGAWIRE_QUEUE_TYPE")] = "quorum",
    duplicate_replies: Annotated[  # noqa: FBT002 - a flag
        bool, typer.Option("--duplicate-replies", help="Fault: publish every reply twice.")
    ] = False,
    late_replies: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Fault: share of sagas whose first reply is late."),
    ] = 0.0,
    late_by: Annotated[float, typer.Option(min=0.0, help="Fault: seconds a late reply waits.")] = (
        0.0
    ),
    handler_delay: Annotated[
        float, typer.Option(min=0.0, help="Fault: seconds every handler takes.")
    ] = 0.0,
    prefetch: Annotated[
        int, typer.Option(min=1, help="Commands each service takes from its queue at a time.")
    ] = 16,
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics; 0: none."
        ),
    ] = 0,
) -> None:
    """Serve the demo shop's commands: take payments, reserve stock, deliver orders."""
    setup_logging(os.environ.get("SAGAWIRE_LOG_LEVEL", "WARNING"))
    try:
        remembered = Journal(journal) if journal is not None else None
        shop = DemoShop(
            FaultPlan(rate=failure_rate),
            Ledger(),
            broken=frozenset(broken or ()),
            dedupe=remembered,
            handler_delay=handler_delay,
        )
        faults: dict[str, float | bool] = {
            "duplicate": duplicate_replies,
            "late_share": late_replies,
            "late_by": late_by,
        }
        tune_gc()
        try:
            asyncio.run(
                serve(
                    services,
                    amqp_url,
                    shop=shop,
                    queue_type=queue_type,
                    faults=faults,
                    prefetch=prefetch,
                    metrics_port=metrics_port,
                )
            )
        finally:
            if remembered is not None:
                remembered.close()
    except (BrokerError, OSError, ValueError) as exc:
        typer.echo(f"error: {redact(str(exc))}", err=True)
        raise typer.Exit(code=1) from None


if __name__ == "__main__":
    cli()
