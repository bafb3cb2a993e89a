"""`sagawire`: the app with every command module registered."""

from __future__ import annotations

from orchestrator.cli import commands  # noqa: F401 - registers every command on the app
from orchestrator.cli.app import app


def main() -> None:
    app()
