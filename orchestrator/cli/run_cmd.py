"""`sagawire run` (the daemon) and `sagawire start` (start a saga through the control queue)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli.app import app
from orchestrator.cli.common import AmqpUrl, control_broker, fail, load_settings, print_problems
from orchestrator.errors import ConfigurationError, DefinitionError, StoreError
from orchestrator.settings import Settings
from participants_sdk.errors import BrokerError
from participants_sdk.gc_tuning import tune_gc
from participants_sdk.headers import valid_traceparent
from participants_sdk.limits import UnstorableData, check_storable


@app.command(
    epilog=(
        "Examples:\n\n"
        "  SAGAWIRE_AMQP_URL=amqp://user:pass@rabbitmq/ SAGAWIRE_MONGODB_URL=mongodb://mongo/sagawire"
        " sagawire run\n\n"
        "  sagawire run --machines machines/ --http-port 9000"
    ),
)
def run(
    amqp_url: AmqpUrl = None,
    mongodb_url: Annotated[
        str | None, typer.Option(help="MongoDB URL (env SAGAWIRE_MONGODB_URL)", show_default=False)
    ] = None,
    machines: Annotated[
        Path | None, typer.Option(help="Machines folder or file (env SAGAWIRE_MACHINES)")
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(
            help="Port of /healthz, /readyz and /metrics; 0: off (env SAGAWIRE_HTTP_PORT)"
        ),
    ] = None,
    queue_type: Annotated[
        str | None, typer.Option(help="quorum (default) or classic (env SAGAWIRE_QUEUE_TYPE)")
    ] = None,
    max_live_actors: Annotated[
        int | None,
        typer.Option(help="Sagas held in memory at most (env SAGAWIRE_MAX_LIVE_ACTORS)"),
    ] = None,
) -> None:
    """Run the orchestrator daemon until SIGTERM or Ctrl-C.

    Loads the machines, connects to RabbitMQ and MongoDB (failing at once, with what to check, if either cannot be reached), publishes commands a crash left unconfirmed, fires due timers, then consumes the reply queues of every service the machines use and the control queue.
    """  # noqa: E501 - typer keeps line breaks: one paragraph, one line
    from orchestrator.daemon.main import run_daemon  # noqa: PLC0415 - keeps other commands light

    settings = load_settings(
        amqp_url=amqp_url,
        mongodb_url=mongodb_url,
        machines=machines,
        http_port=http_port,
        queue_type=queue_type,
        max_live_actors=max_live_actors,
    )
    tune_gc()
    try:
        asyncio.run(run_daemon(settings))
    except DefinitionError as exc:
        print_problems(exc)
        raise typer.Exit(code=1) from None
    except (ConfigurationError, BrokerError, OSError) as exc:
        raise fail(str(exc)) from None


def _parse_data(data: str) -> dict[str, Any]:
    text = Path(data[1:]).read_text() if data.startswith("@") else data
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"--data is not valid JSON: {exc.msg} at column {exc.colno}", code=2) from None
    if not isinstance(value, dict):
        raise fail('--data must be a JSON object, e.g. \'{"order_id": "o-1"}\'', code=2)
    try:
        check_storable(value, "--data")
    except UnstorableData as exc:
        raise fail(str(exc), code=2) from None
    return value


@app.command(
    epilog=(
        "Examples:\n\n"
        '  sagawire start order --saga-id o-1 --data \'{"order_id": "o-1", "total": 42}\'\n\n'
        "  sagawire start order --data @order.json"
    ),
)
def start(
    machine: Annotated[str, typer.Argument(help="The machine to run, e.g. order.")],
    data: Annotated[
        str, typer.Option(help="Saga data: a JSON object, or @FILE holding one.")
    ] = "{}",
    saga_id: Annotated[
        str | None, typer.Option(help="Saga id (default: a new one); starting twice is a no-op.")
    ] = None,
    amqp_url: AmqpUrl = None,
    wait: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for the daemon to create the saga (reads MongoDB); a refusal "
            "(e.g. a paused machine) then exits 1 with the reason. 0: only send.",
            min=0,
        ),
    ] = 0.0,
    mongodb_url: Annotated[
        str | None, typer.Option(help="MongoDB URL, for --wait (env SAGAWIRE_MONGODB_URL)")
    ] = None,
    traceparent: Annotated[
        str | None,
        typer.Option(
            help="W3C trace context to start the saga under "
            "(00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>); every command of the "
            "saga carries it."
        ),
    ] = None,
) -> None:
    """Start a saga by sending a start request to the running daemon; prints the saga id."""
    payload = _parse_data(data)
    if traceparent is not None and valid_traceparent(traceparent) is None:
        raise fail(f"--traceparent {traceparent[:60]!r} is not a W3C traceparent", code=2)
    settings = load_settings(amqp_url=amqp_url, mongodb_url=mongodb_url)

    async def send() -> str:
        from participants_sdk.saga_client import SagaClient  # noqa: PLC0415 - keeps --help light

        async with control_broker(settings) as broker:
            return await SagaClient(broker).start_saga(
                machine, payload, saga_id=saga_id, traceparent=traceparent
            )

    try:
        started = asyncio.run(send())
        if wait > 0:
            asyncio.run(_await_start(settings, started, machine, payload, wait))
    except (BrokerError, OSError, ConfigurationError, StoreError) as exc:
        raise fail(str(exc)) from None
    typer.echo(started)


async def _await_start(
    settings: Settings, saga_id: str, machine: str, data: dict[str, Any], wait: float
) -> None:
    """Return once the saga exists as started; exit 1 with the reason if the start was refused
    (by the daemon, or because a saga with this id holds another machine or data)."""
    from orchestrator.adapters.mongo import MongoSagaStore  # noqa: PLC0415
    from orchestrator.adapters.rabbitmq import dead_letters  # noqa: PLC0415
    from orchestrator.core.saga import Saga, start_digest  # noqa: PLC0415
    from orchestrator.verdicts import Refused, await_verdict  # noqa: PLC0415

    digest = start_digest(machine, data)

    def started_as_asked(saga: Saga) -> bool:
        if saga.machine != machine or saga.start_digest not in (None, digest):
            other = "data" if saga.machine == machine else "machine"
            raise Refused(
                f"saga {saga_id!r} exists with other {other}"
                f" (started as {saga.machine} v{saga.machine_version} on "
                f"{saga.created_at.isoformat()}); start a new saga under a new id"
            )
        return True

    store = await MongoSagaStore.connect(settings.mongodb_url)
    connection = await dead_letters.connect(settings.amqp_url)
    try:
        await await_verdict(
            store, connection, saga_id, f"start:{saga_id}", applied=started_as_asked, wait=wait
        )
    except Refused as refused:
        raise fail(f"start of {saga_id!r} refused: {refused}") from None
    except TimeoutError:
        raise fail(
            f"start of {saga_id!r} sent, but no saga within {wait:g}s: is a daemon running?"
        ) from None
    finally:
        await connection.close()
        await store.close()
