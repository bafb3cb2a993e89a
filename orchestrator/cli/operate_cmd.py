"""`sagawire sagas retry|abort|resume`: act on a saga through the running daemon.

The request goes through the control queue, so the daemon applies it through the saga's actor
and records it in the saga's history with the operator's name. The command then waits until the
saga shows the request applied, or the daemon refused it (a refused request lands in the control
DLQ with the reason: the command takes it out and prints it). With no daemon consuming the
control queue it says so at once instead of waiting.
"""

from __future__ import annotations

import asyncio
import getpass
import inspect
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.adapters.rabbitmq import dead_letters
from orchestrator.cli.app import sagas_app
from orchestrator.cli.common import AmqpUrl, MongoUrl, control_broker, fail, load_settings
from orchestrator.errors import ConfigurationError, StoreError
from orchestrator.logs import redact
from orchestrator.runtime.control import OperatorVerb, send_operator_request
from orchestrator.verdicts import Refused, await_verdict
from participants_sdk import protocol
from participants_sdk.errors import BrokerError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection

    from orchestrator.adapters.mongo import MongoSagaStore
    from orchestrator.core.saga import Saga
    from orchestrator.settings import Settings

Operator = Annotated[
    str | None,
    typer.Option(help="Your name, recorded in the saga's history (default: user@host)."),
]
Reason = Annotated[str | None, typer.Option(help="Why, recorded in the saga's history.")]
Wait = Annotated[
    float, typer.Option(help="Seconds to wait for the daemon to apply the request.", min=0.5)
]


class _Outcome(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


async def control_consumers(connection: AbstractConnection) -> int:
    """Consumers of the control queue: 0 when no daemon runs (or none ever declared it)."""
    try:
        return (await dead_letters.counts(connection, protocol.CONTROL_QUEUE))[1]
    except dead_letters.QueueMissing:
        return 0


def _describe(saga: Saga) -> str:
    pending = ", ".join(f"{s.step} attempt {s.attempt}" for s in saga.pending)
    return f"saga {saga.saga_id} is {saga.status.value}, state {saga.state}" + (
        f"; waiting on {pending}" if pending else ""
    )


async def _send(
    settings: Settings,
    verb: OperatorVerb,
    saga_id: str,
    *,
    operator: str,
    compensate: bool,
    reason: str | None,
) -> str:
    async with control_broker(settings) as broker:
        return await send_operator_request(
            broker, verb, saga_id, operator=operator, compensate=compensate, reason=reason
        )


async def _await_outcome(
    store: MongoSagaStore,
    connection: AbstractConnection,
    saga_id: str,
    request_id: str,
    wait: float,
) -> str:
    try:
        saga = await await_verdict(
            store,
            connection,
            saga_id,
            request_id,
            applied=lambda saga: request_id in saga.recent_requests,
            wait=wait,
        )
    except Refused as refused:
        raise _Outcome(1, f"refused: {str(refused).removeprefix('refused: ')}") from None
    except TimeoutError:
        raise _Outcome(
            1,
            f"sent (request {request_id}) but not applied within {wait:g}s: is the daemon busy "
            "or stopping? `sagawire sagas show` tells when it is",
        ) from None
    return _describe(saga)


def _request(
    verb: OperatorVerb,
    saga_id: str,
    *,
    operator: str | None,
    reason: str | None,
    wait: float,
    amqp_url: str | None,
    mongodb_url: str | None,
    compensate: bool = False,
) -> None:
    from orchestrator.adapters.mongo import MongoSagaStore  # noqa: PLC0415

    settings = load_settings(amqp_url=amqp_url, mongodb_url=mongodb_url)
    who = operator or f"{getpass.getuser()}@{socket.gethostname()}"

    async def run() -> str:
        store = await MongoSagaStore.connect(settings.mongodb_url)
        try:
            if await store.load(saga_id) is None:
                raise _Outcome(1, f"no saga {saga_id!r} in the database")
            connection = await dead_letters.connect(settings.amqp_url)
            try:
                if await control_consumers(connection) == 0:
                    raise _Outcome(
                        1,
                        f"no daemon is running: nothing consumes {protocol.CONTROL_QUEUE} at "
                        f"{redact(settings.amqp_url)}; start one with `sagawire run`",
                    )
                request_id = await _send(
                    settings, verb, saga_id, operator=who, compensate=compensate, reason=reason
                )
                return await _await_outcome(store, connection, saga_id, request_id, wait)
            finally:
                await connection.close()
        finally:
            await store.close()

    try:
        described = asyncio.run(run())
    except _Outcome as outcome:
        raise fail(f"{verb}: {outcome}", code=outcome.code) from None
    except (ConfigurationError, StoreError, BrokerError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"{verb} applied by {who}: {described}")


def _parameter(
    name: str, annotation: object, default: object = inspect.Parameter.empty
) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


SAGA_ID = _parameter("saga_id", Annotated[str, typer.Argument(help="The saga's id.")])
COMPENSATE = _parameter(
    "compensate",
    Annotated[
        bool, typer.Option("--compensate", help="Undo the steps done (else stop where it is).")
    ],
    default=False,
)
COMMON = (
    _parameter("operator", Operator, None),
    _parameter("reason", Reason, None),
    _parameter("wait", Wait, 15.0),
    _parameter("amqp_url", AmqpUrl, None),
    _parameter("mongodb_url", MongoUrl, None),
)


def _register(verb: OperatorVerb, summary: str, example: str, *, compensates: bool = False) -> None:
    """One `sagas` command per verb; they differ in help text, and abort takes --compensate."""

    def command(**options: object) -> None:
        _request(verb, **options)  # type: ignore[arg-type] # typer passes what the signature says

    parameters = (SAGA_ID, COMPENSATE, *COMMON) if compensates else (SAGA_ID, *COMMON)
    command.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined] # read by typer
    command.__doc__ = summary
    command.__name__ = verb
    sagas_app.command(name=verb, epilog=f"Examples:\n\n  sagawire sagas {verb} {example}")(command)


_register(
    "retry",
    """Send the pending step's command again, as a new attempt of the same visit.

    Exits 0 once applied; 1 if refused (e.g. the saga finished), unknown, or no daemon runs.
    """,
    "o-123 --reason 'stock service fixed'",
)
_register(
    "abort",
    """Abort a running saga: at once, or after running its compensations (--compensate).

    Exits 0 once applied; 1 if refused (e.g. the saga finished), unknown, or no daemon runs.
    """,
    "o-123 --compensate --reason 'customer cancelled'",
    compensates=True,
)
_register(
    "resume",
    """Continue a compensation that gave up (status failed), after fixing what made it fail.

    Exits 0 once applied; 1 if refused (nothing to resume), unknown, or no daemon runs.
    """,
    "o-123 --reason 'refund service back'",
)
