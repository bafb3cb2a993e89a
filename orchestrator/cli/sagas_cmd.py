"""`sagawire sagas list|show`: find a saga and see where it is and why, read from MongoDB."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.cli.app import sagas_app
from orchestrator.cli.common import AsJson, MongoUrl, fail, with_store
from orchestrator.core.durations import time_or_age
from orchestrator.core.saga import Saga, SagaStatus

if TYPE_CHECKING:
    from orchestrator.adapters.mongo import MongoSagaStore, SagaPage, SagaSummary

T = TypeVar("T")


def parse_time(text: str, option: str, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 time (UTC unless it says otherwise) or an age, written as machine files write
    durations: 90s, 15m, 1h30m, 7d ago."""
    try:
        return time_or_age(text, now)
    except ValueError as exc:
        raise fail(f"{option} {exc}", code=2) from None


def _when(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    if value is None:
        return "-"
    text = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    if now is None:
        return text
    seconds = int((value - now).total_seconds())
    return f"{text} ({'in ' + _age(seconds) if seconds >= 0 else _age(-seconds) + ' overdue'})"


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@sagas_app.command(
    "list",
    epilog=(
        "Examples:\n\n"
        "  sagawire sagas list --stuck\n\n"
        "  sagawire sagas list --machine order --status compensating --since 2h\n\n"
        "  sagawire sagas list --label PAID --page 2 --json"
    ),
)
def list_sagas(  # noqa: PLR0913, PLR0917 - one parameter per option
    machine: Annotated[str | None, typer.Option(help="Only this machine.")] = None,
    status: Annotated[
        list[SagaStatus] | None,
        typer.Option(help="Only this status (or outcome); repeat for several."),
    ] = None,
    state: Annotated[str | None, typer.Option(help="Only sagas in this state.")] = None,
    label: Annotated[
        str | None, typer.Option(help="Only this business state (a state's label), e.g. PAID.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Updated at or after: ISO time or age (15m, 2h, 7d).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Updated before: ISO time or age (15m, 2h, 7d).")
    ] = None,
    stuck: Annotated[
        bool,
        typer.Option(
            "--stuck",
            help="Only stuck sagas: waiting past a deadline by --stuck-after, or flagged for "
            "an operator.",
        ),
    ] = False,
    stuck_after: Annotated[
        float, typer.Option(help="Seconds past a deadline that count as stuck.", min=0)
    ] = 60.0,
    limit: Annotated[int, typer.Option(help="Sagas per page.", min=1, max=1000)] = 50,
    page: Annotated[int, typer.Option(help="Page to show, from 1.", min=1)] = 1,
    mongodb_url: MongoUrl = None,
    as_json: AsJson = False,
) -> None:
    """List sagas, most recently updated first, with how many match.

    Exits 0 (also when none match); 1 when MongoDB cannot be reached; 2 on a bad option.
    """
    from orchestrator.adapters.mongo import SagaFilter  # noqa: PLC0415 - light CLI start

    now = dt.datetime.now(dt.UTC)
    where = SagaFilter(
        machine=machine,
        statuses=tuple(status or ()),
        state=state,
        label=label,
        since=parse_time(since, "--since", now) if since else None,
        until=parse_time(until, "--until", now) if until else None,
        stuck_before=now - dt.timedelta(seconds=stuck_after) if stuck else None,
    )
    result = with_store(
        mongodb_url,
        lambda store: store.queries.find_sagas(where, limit=limit, skip=(page - 1) * limit),
    )
    if as_json:
        document = {
            "total": result.total,
            "page": page,
            "limit": limit,
            "sagas": [summary.to_json() for summary in result.sagas],
        }
        typer.echo(json.dumps(document, indent=2))
        return
    _print_page(result, page, limit, now)


def _print_page(result: SagaPage, page: int, limit: int, now: dt.datetime) -> None:
    console = Console(width=160)
    if not result.sagas:
        console.print(f"no saga matches ({result.total} on all pages)")
        return
    table = Table("saga", "machine", "status", "state", "label", "updated", "deadline / flagged")
    for summary in result.sagas:
        table.add_row(
            summary.saga_id,
            f"{summary.machine} v{summary.machine_version}",
            summary.status,
            ", ".join(summary.states),
            summary.label or "-",
            _when(summary.updated_at),
            _attention(summary, now),
        )
    console.print(table)
    first = (page - 1) * limit + 1
    console.print(f"{first}-{first + len(result.sagas) - 1} of {result.total}")


def _attention(summary: SagaSummary, now: dt.datetime) -> str:
    if summary.flagged:
        return f"flagged: {summary.flagged}"
    if summary.status in ("running", "compensating"):
        return _when(summary.deadline, now)
    return "-"


@sagas_app.command(
    epilog="Examples:\n\n  sagawire sagas show o-123\n\n  sagawire sagas show o-123 --json"
)
def show(
    saga_id: Annotated[str, typer.Argument(help="The saga's id.")],
    mongodb_url: MongoUrl = None,
    as_json: AsJson = False,
) -> None:
    """Show one saga: status, state, data, pending commands, history timeline and outbox.

    Exits 1 when there is no such saga (or MongoDB cannot be reached).
    """

    async def load(store: MongoSagaStore) -> Saga | None:
        return await store.load(saga_id)

    saga = with_store(mongodb_url, load)
    if saga is None:
        raise fail(f"no saga {saga_id!r} in the database; `sagawire sagas list` shows what is")
    if as_json:
        typer.echo(saga.model_dump_json(indent=2))
        return
    _print_saga(saga, dt.datetime.now(dt.UTC))


def _print_saga(saga: Saga, now: dt.datetime) -> None:
    console = Console(width=160)
    console.print(
        f"saga {saga.saga_id} ({saga.machine} v{saga.machine_version}), version {saga.version}"
    )
    console.print(
        f"status {saga.status.value}; state {saga.state}; label {saga.label or '-'}; "
        f"flagged {saga.flagged or '-'}"
    )
    console.print(
        f"created {_when(saga.created_at)}; updated {_when(saga.updated_at)}; "
        f"finished {_when(saga.finished_at)}"
    )
    if saga.compensation is not None:
        comp = saga.compensation
        console.print(
            f"compensating because {comp.reason}: done {comp.done or '-'}, "
            f"remaining {[step.step for step in comp.remaining] or '-'}"
        )
    pending = Table("pending step", "service.command", "attempt", "waiting", "deadline", "key")
    for step in saga.pending:
        pending.add_row(
            step.step,
            f"{step.service}.{step.command}",
            f"{step.attempt}/{step.max_attempts}",
            step.waiting,
            _when(step.deadline, now),
            step.idempotency_key,
        )
    if saga.pending:
        console.print(pending)
    console.print("data:")
    console.print_json(json.dumps(saga.data, default=str))
    history = Table("time", "event", "state", "step", "attempt", "by", "detail")
    for entry in saga.history:
        history.add_row(
            _when(entry.at),
            entry.event,
            entry.state or "-",
            entry.step or "-",
            str(entry.attempt) if entry.attempt is not None else "-",
            entry.by,
            entry.detail or "",
        )
    dropped = f" ({saga.history_dropped} older entries dropped)" if saga.history_dropped else ""
    console.print(f"history{dropped}:")
    console.print(history)
    if saga.outbox:
        outbox = Table("outbox message", "service.command", "step", "attempt")
        for command in saga.outbox:
            outbox.add_row(
                command.message_id,
                f"{command.service}.{command.name}",
                command.step,
                str(command.attempt),
            )
        console.print(outbox)
    else:
        console.print("outbox: empty (every command confirmed by the broker)")
