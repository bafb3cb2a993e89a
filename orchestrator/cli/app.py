"""The `sagawire` command line: one typer app; each command module registers its commands on
it (or on a sub-app declared here), and `orchestrator.cli.main` imports them all."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer

from orchestrator.logs import setup_logging

app = typer.Typer(
    name="sagawire",
    help="Sagawire: a saga orchestrator for Python microservices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def installed_version() -> str:
    """The version of the installed `sagawire` distribution."""
    try:
        return metadata.version("sagawire")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"sagawire {installed_version()}")
        raise typer.Exit


@app.callback()
def _configure(
    ctx: typer.Context,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print Sagawire's version and exit.",
        ),
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(
            envvar="SAGAWIRE_LOG_LEVEL",
            help="Lowest level logged to stderr: DEBUG, INFO, WARNING or ERROR "
            "(default: INFO for the servers, `run` and `gateway`; WARNING otherwise).",
            show_default=False,
        ),
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option(
            "--log-json/--log-console",
            envvar="SAGAWIRE_LOG_JSON",
            help="Log as JSON lines or readable text (default: JSON unless on a terminal).",
        ),
    ] = None,
) -> None:
    default = "INFO" if ctx.invoked_subcommand in SERVERS else "WARNING"
    setup_logging(log_level or default, json=log_json)


SERVERS = frozenset({"run", "gateway"})
"""Commands that run until stopped: they log at INFO unless told otherwise."""


sagas_app = typer.Typer(help="Running and finished sagas, read from MongoDB.", no_args_is_help=True)
"""`sagawire sagas ...`: reading commands (sagas_cmd) and operator requests (operate_cmd)."""
app.add_typer(sagas_app, name="sagas")
