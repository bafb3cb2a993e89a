"""`sagawire machines ...`: check machine definitions before the daemon loads them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.app import app
from orchestrator.cli.common import load_registry

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


app.add_typer(machines_app, name="machines")
