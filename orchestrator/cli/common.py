"""What several commands share: options, settings, connections, loading machines with their
problems printed, clean errors. Command modules import from here and from `app`, never from
each other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from orchestrator.core.machines import MachineRegistry, load_machines
from orchestrator.errors import ConfigurationError, DefinitionError, StoreError
from orchestrator.logs import redact
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.adapters.mongo import MongoSagaStore
    from participants_sdk.rabbitmq import RabbitBroker

T = TypeVar("T")

AmqpUrl = Annotated[
    str | None,
    typer.Option(help="RabbitMQ URL (env SAGAWIRE_AMQP_URL)", show_default=False),
]


MongoUrl = Annotated[
    str | None,
    typer.Option(help="MongoDB URL; the path names the database (env SAGAWIRE_MONGODB_URL)"),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: ...` (passwords redacted) to stderr; raise the returned Exit."""
    typer.echo(f"error: {redact(message)}", err=True)
    return typer.Exit(code=code)


def print_problems(exc: DefinitionError) -> None:
    for problem in exc.problems:
        typer.echo(problem, err=True)


def load_registry(path: Path) -> MachineRegistry:
    """The machines at `path`; exits 2 if it does not exist, 1 listing every problem."""
    if not path.exists():
        raise fail(f"{path}: no such file or folder of machines; pass --machines PATH", code=2)
    try:
        return load_machines(path)
    except DefinitionError as exc:
        print_problems(exc)
        typer.echo(f"{len(exc.problems)} problem(s) in {path}", err=True)
        raise typer.Exit(code=1) from None


def load_settings(**overrides: Any) -> Settings:  # noqa: ANN401 - typer option values
    """Settings from the environment, with the flags that were given on top."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        # Never echo the input: it may hold a password.
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(part) for part in error["loc"])
            typer.echo(
                f"error: SAGAWIRE_{field.upper()} / --{field.replace('_', '-')}: "
                f"{redact(error['msg'])}",
                err=True,
            )
        raise typer.Exit(code=2) from None


@contextlib.asynccontextmanager
async def control_broker(settings: Settings) -> AsyncIterator[RabbitBroker]:
    """A broker connection for one request to the control queue (declared, if the daemon has
    not yet)."""
    from orchestrator.adapters.rabbitmq.control import control_broker as connect  # noqa: PLC0415 - keeps other commands light

    async with connect(
        settings.amqp_url,
        queue_type=settings.queue_type,
        delivery_limit=settings.delivery_limit,
        name="sagawire-cli",
    ) as broker:
        yield broker


def with_store(url: str | None, work: Callable[[MongoSagaStore], Awaitable[T]]) -> T:
    """Connect to MongoDB, run `work` on the store, close; connection problems exit 1."""
    from orchestrator.adapters.mongo import MongoSagaStore  # noqa: PLC0415 - light CLI start

    settings = load_settings(mongodb_url=url)

    async def run() -> T:
        store = await MongoSagaStore.connect(settings.mongodb_url)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (ConfigurationError, StoreError) as exc:
        raise fail(str(exc)) from None
