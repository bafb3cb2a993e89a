"""`sagawire dlq list|show|replay|purge`: get dead-lettered messages back into the flow."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.adapters.rabbitmq import dead_letters
from orchestrator.cli.app import app
from orchestrator.cli.common import AmqpUrl, AsJson, fail, load_registry, load_settings
from participants_sdk import protocol
from participants_sdk.errors import BrokerError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection

T = TypeVar("T")

dlq_app = typer.Typer(
    help="Dead-lettered messages: read them, send them back where they came from, purge.",
    no_args_is_help=True,
)

Queue = Annotated[
    str | None,
    typer.Option(
        help="One DLQ (or the queue it belongs to), e.g. sagawire.payment.commands.dlq "
        "(default: every DLQ of the services the machines use)."
    ),
]
Machines = Annotated[
    Path,
    typer.Option(
        "--machines",
        help="Machines folder or file: which services' DLQs to look at.",
        envvar="SAGAWIRE_MACHINES",
    ),
]


def _queues(queue: str | None, machines: Path) -> tuple[list[str], bool]:
    """The DLQs to work on, and whether the user named one (a missing one is then an error)."""
    if queue:
        return [queue if queue.endswith(".dlq") else protocol.dead_letter_queue(queue)], True
    registry = load_registry(machines)
    services = {service for machine in registry for service in machine.services()}
    return dead_letters.dead_letter_queues(services), False


def _with_broker(url: str | None, work: Callable[[AbstractConnection], Awaitable[T]]) -> T:
    settings = load_settings(amqp_url=url)

    async def run() -> T:
        connection = await dead_letters.connect(settings.amqp_url)
        try:
            return await work(connection)
        finally:
            await connection.close()

    try:
        return asyncio.run(run())
    except dead_letters.QueueMissing as exc:
        raise fail(f"queue {exc.args[0]!r} does not exist on the broker; check --queue") from None
    except BrokerError as exc:
        raise fail(str(exc)) from None


async def _present(
    connection: AbstractConnection, queues: list[str], named: bool
) -> dict[str, int]:
    """The depth of each of `queues` that exists; a missing one the user named is an error."""
    found = {}
    for queue in queues:
        try:
            found[queue] = await dead_letters.depth(connection, queue)
        except dead_letters.QueueMissing:
            if named:
                raise
    return found


@dlq_app.command(
    "list",
    epilog=(
        "Examples:\n\n  sagawire dlq list\n\n"
        "  sagawire dlq list --queue sagawire.payment.commands.dlq --json"
    ),
)
def list_letters(
    queue: Queue = None,
    limit: Annotated[int, typer.Option(help="Messages shown per queue at most.", min=1)] = 100,
    machines: Machines = Path("machines"),
    amqp_url: AmqpUrl = None,
    as_json: AsJson = False,
) -> None:
    """Read dead-lettered messages without consuming them: every message stays where it was."""
    queues, named = _queues(queue, machines)

    async def read(
        connection: AbstractConnection,
    ) -> dict[str, tuple[int, list[dead_letters.DeadLetter]]]:
        present = await _present(connection, queues, named)
        return {
            name: (depth, await dead_letters.browse(connection, name, limit=limit))
            for name, depth in present.items()
        }

    found = _with_broker(amqp_url, read)
    if as_json:
        document = {
            name: {"depth": depth, "messages": [letter.to_json() for letter in letters]}
            for name, (depth, letters) in found.items()
        }
        typer.echo(json.dumps(document, indent=2))
        return
    console = Console(width=160)
    table = Table("queue", "message id", "type", "reason", "sent to", "replays")
    for letters in (letters for _, letters in found.values()):
        for letter in letters:
            table.add_row(
                letter.queue,
                letter.message_id,
                letter.message.type,
                letter.reason,
                f"{letter.exchange or '(default)'} -> {letter.routing_key}",
                str(letter.replays),
            )
    if table.rows:
        console.print(table)
    for name, (depth, _) in found.items():
        console.print(f"{name}: {depth} message(s)")


@dlq_app.command(
    epilog="Examples:\n\n  sagawire dlq show 3f2a9c...\n\n  sagawire dlq show 3f2a9c... --json"
)
def show(
    message_id: Annotated[str, typer.Argument(help="The message id, as `dlq list` shows it.")],
    queue: Queue = None,
    machines: Machines = Path("machines"),
    amqp_url: AmqpUrl = None,
    as_json: AsJson = False,
) -> None:
    """Show one dead-lettered message: headers, reason, original exchange and key, body.

    Exits 1 when no DLQ holds it.
    """
    queues, named = _queues(queue, machines)

    async def find(connection: AbstractConnection) -> dead_letters.DeadLetter | None:
        for name in await _present(connection, queues, named):
            for letter in await dead_letters.browse(connection, name, limit=None):
                if letter.message_id == message_id:
                    return letter
        return None

    letter = _with_broker(amqp_url, find)
    if letter is None:
        raise fail(f"no dead-lettered message {message_id!r} in {', '.join(queues)}")
    document = letter.to_json(body=True)
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    for key in (
        "queue",
        "message_id",
        "type",
        "correlation_id",
        "reason",
        "from_queue",
        "exchange",
        "routing_key",
        "replays",
    ):
        typer.echo(f"{key}: {document[key]}")
    typer.echo("headers:")
    for key, value in sorted(document["headers"].items()):
        typer.echo(f"  {key}: {value}")
    typer.echo(f"body ({document['content_type']}):")
    typer.echo(document["body"])


@dlq_app.command(
    epilog=(
        "Examples:\n\n"
        "  sagawire dlq replay --queue sagawire.payment.commands.dlq --all --dry-run\n\n"
        "  sagawire dlq replay --id 3f2a9c... --id 7b01e4..."
    ),
)
def replay(
    queue: Queue = None,
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="A message id to replay; repeat for several.")
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every message of the queue(s).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be replayed; change nothing.")
    ] = False,
    max_replays: Annotated[
        int,
        typer.Option(
            help="A message replayed this many times already is held, not replayed.", min=1
        ),
    ] = dead_letters.DEFAULT_MAX_REPLAYS,
    machines: Machines = Path("machines"),
    amqp_url: AmqpUrl = None,
) -> None:
    """Send dead letters back to the exchange and routing key they were first sent to.

    Each is acked in its DLQ only after the broker confirmed the copy. Exits 1 when a chosen
    message was not found or could not be replayed, 2 without --id or --all.
    """
    if not ids and not replay_all:
        raise fail("say which messages: --id ID (repeatable) or --all", code=2)
    wanted = set(ids or ())
    queues, named = _queues(queue, machines)

    async def run(connection: AbstractConnection) -> dead_letters.ReplayReport:
        total = dead_letters.ReplayReport()
        for name in await _present(connection, queues, named):
            report = await dead_letters.replay(
                connection,
                name,
                lambda letter: replay_all or letter.message_id in wanted,
                max_replays=max_replays,
                dry_run=dry_run,
            )
            total.replayed += report.replayed
            total.held += report.held
            total.unroutable += report.unroutable
        return total

    report = _with_broker(amqp_url, run)
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {len(report.replayed)} message(s)")
    for letter in report.held:
        typer.echo(
            f"held: {letter.message_id} in {letter.queue}: replayed {letter.replays} times already "
            f"(--max-replays {max_replays}); see `sagawire dlq show {letter.message_id}`"
        )
    for letter, problem in report.unroutable:
        typer.echo(f"left: {letter.message_id} in {letter.queue}: {problem}")
    seen = {letter.message_id for letter in [*report.replayed, *report.held]} | {
        letter.message_id for letter, _ in report.unroutable
    }
    missing = sorted(wanted - seen)
    if missing:
        typer.echo(f"error: not found in {', '.join(queues)}: {', '.join(missing)}", err=True)
    if missing or report.unroutable or report.held:
        raise typer.Exit(code=1)


@dlq_app.command(
    epilog="Examples:\n\n  sagawire dlq purge --queue sagawire.payment.commands.dlq --yes"
)
def purge(
    queue: Annotated[str, typer.Option(help="The DLQ to empty (or the queue it belongs to).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    amqp_url: AmqpUrl = None,
) -> None:
    """Delete every message of one DLQ, after asking (unless --yes). Exits 1 if refused."""
    name = queue if queue.endswith(".dlq") else protocol.dead_letter_queue(queue)
    if not yes and not typer.confirm(f"delete every message in {name}?", default=False):
        raise fail("nothing purged")
    purged = _with_broker(amqp_url, lambda connection: dead_letters.purge(connection, name))
    typer.echo(f"purged {purged} message(s) from {name}")


app.add_typer(dlq_app, name="dlq")
