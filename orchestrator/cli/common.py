"""What several commands share: loading machines with their problems printed, clean errors."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.errors import DefinitionError
from orchestrator.logs import redact
from orchestrator.machines import MachineRegistry, load_machines


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
