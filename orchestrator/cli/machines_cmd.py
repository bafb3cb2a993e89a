"""`sagawire machines ...`: list, show, draw and check the machine definitions."""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table

from orchestrator.cli.app import app
from orchestrator.cli.common import fail, load_registry, with_store
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.diagram import FORMATS, render
from orchestrator.core.machines import MachineRegistry, UnknownMachine

if TYPE_CHECKING:
    from orchestrator.adapters.mongo import MongoSagaStore

T = TypeVar("T")

machines_app = typer.Typer(
    help="Saga machine definitions (the YAML files in machines/).",
    no_args_is_help=True,
)


@machines_app.command(
    epilog=(
        "Examples:\n\n"
        "  sagawire machines validate                       (the machines/ folder)\n\n"
        "  sagawire machines validate machines/order.yaml   (one file)"
    ),
)
def validate(
    path: Annotated[
        Path,
        typer.Argument(help="A machine YAML file, or a folder of *.yaml / *.yml files."),
    ] = Path("machines"),
) -> None:
    """Check machine definitions the way the daemon loads them, without starting it.

    Prints one line per machine version: its file, states and content hash.

    On problems prints each one to stderr, naming file, machine, state and field; exits 1.
    """
    registry = load_registry(path)
    for machine in registry:
        typer.echo(
            f"{registry.source(machine.machine, machine.version)}: "
            f"{machine.machine} v{machine.version}: {len(machine.states)} states, "
            f"hash {machine.content_hash()[:12]}"
        )


MachinesPath = Annotated[
    Path,
    typer.Option(
        "--machines",
        help="Machines folder or file (env SAGAWIRE_MACHINES).",
        envvar="SAGAWIRE_MACHINES",
    ),
]
Version = Annotated[int | None, typer.Option(help="A version (default: the newest).", min=1)]


def _pick(registry: MachineRegistry, name: str, version: int | None) -> MachineDefinition:
    try:
        return registry.latest(name) if version is None else registry.get(name, version)
    except UnknownMachine as exc:
        raise fail(str(exc)) from None


@machines_app.command(
    "list",
    epilog="Examples:\n\n  sagawire machines list\n\n  sagawire machines list --json",
)
def list_machines(
    machines: MachinesPath = Path("machines"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List every machine version: states, services it commands, content hash, file."""
    registry = load_registry(machines)
    rows = [
        {
            "machine": machine.machine,
            "version": machine.version,
            "states": len(machine.states),
            "services": sorted(machine.services()),
            "hash": machine.content_hash(),
            "file": registry.source(machine.machine, machine.version),
        }
        for machine in sorted(registry, key=lambda m: m.key)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("machine", "version", "states", "services", "hash", "file")
    for row in rows:
        table.add_row(
            str(row["machine"]),
            str(row["version"]),
            str(row["states"]),
            ", ".join(row["services"]),  # type: ignore[arg-type]
            str(row["hash"])[:12],
            str(row["file"]),
        )
    Console(width=160).print(table)


@machines_app.command(
    epilog=(
        "Examples:\n\n  sagawire machines show order\n\n"
        "  sagawire machines show order --version 1 --json"
    ),
)
def show(
    name: Annotated[str, typer.Argument(help="The machine's name, e.g. order.")],
    version: Version = None,
    machines: MachinesPath = Path("machines"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show one machine version as written (YAML, or JSON with --json). Exits 1 if unknown."""
    registry = load_registry(machines)
    machine = _pick(registry, name, version)
    if as_json:
        document = {
            "source": registry.source(machine.machine, machine.version),
            "hash": machine.content_hash(),
            "definition": machine.snapshot(),
        }
        typer.echo(json.dumps(document, indent=2))
        return
    typer.echo(f"# {registry.source(machine.machine, machine.version)}")
    typer.echo(f"# hash {machine.content_hash()}")
    typer.echo(yaml.safe_dump(machine.snapshot(), sort_keys=False), nl=False)


@machines_app.command(
    epilog=(
        "Examples:\n\n  sagawire machines diagram order            (Mermaid, for markdown)\n\n"
        "  sagawire machines diagram order --format dot | dot -Tpng -o order.png"
    ),
)
def diagram(
    name: Annotated[str, typer.Argument(help="The machine's name, e.g. order.")],
    version: Version = None,
    form: Annotated[
        str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")
    ] = "mermaid",
    machines: MachinesPath = Path("machines"),
) -> None:
    """Draw a machine: states, transitions, compensations and timeouts.

    Mermaid output renders in GitHub markdown inside a ```mermaid block; dot is for Graphviz.
    """
    if form not in FORMATS:
        raise fail(f"--format {form!r}: use one of {', '.join(FORMATS)}", code=2)
    registry = load_registry(machines)
    typer.echo(render(_pick(registry, name, version), form), nl=False)


def _set_pause(
    name: str,
    machines: Path,
    mongodb_url: str | None,
    pause: Callable[[MongoSagaStore], Awaitable[T]],
) -> T:

    _pick(load_registry(machines), name, None)  # an unknown name exits 1, naming the known ones
    return with_store(mongodb_url, pause)


@machines_app.command(
    epilog="Examples:\n\n  sagawire machines pause order --reason 'payment provider outage'",
)
def pause(
    name: Annotated[str, typer.Argument(help="The machine's name, e.g. order.")],
    reason: Annotated[
        str | None, typer.Option(help="Why; start requests are refused with it.")
    ] = None,
    operator: Annotated[str | None, typer.Option(help="Your name (default: user@host).")] = None,
    machines: MachinesPath = Path("machines"),
    mongodb_url: Annotated[
        str | None, typer.Option(help="MongoDB URL (env SAGAWIRE_MONGODB_URL)")
    ] = None,
) -> None:
    """Refuse new sagas of a machine (the daemon dead-letters their start requests with the
    reason, within a second); sagas already running go on. Undo with `machines resume`."""
    who = operator or f"{getpass.getuser()}@{socket.gethostname()}"
    _set_pause(
        name, machines, mongodb_url, lambda store: store.pause_machine(name, by=who, reason=reason)
    )
    typer.echo(f"machine {name!r} paused by {who}: new sagas are refused, running ones go on")


@machines_app.command(epilog="Examples:\n\n  sagawire machines resume order")
def resume(
    name: Annotated[str, typer.Argument(help="The machine's name, e.g. order.")],
    machines: MachinesPath = Path("machines"),
    mongodb_url: Annotated[
        str | None, typer.Option(help="MongoDB URL (env SAGAWIRE_MONGODB_URL)")
    ] = None,
) -> None:
    """Let new sagas of a paused machine start again. Exits 1 if it was not paused."""
    if not _set_pause(name, machines, mongodb_url, lambda store: store.resume_machine(name)):
        raise fail(f"machine {name!r} is not paused")
    typer.echo(f"machine {name!r} resumed: new sagas start again")


app.add_typer(machines_app, name="machines")
