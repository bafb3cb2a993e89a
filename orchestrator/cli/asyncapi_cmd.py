"""`sagawire asyncapi`: the machines' commands, replies and control requests as AsyncAPI 3.0.0."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Final

import typer
import yaml

from orchestrator.asyncapi import AsyncApiError, UnknownService, asyncapi_document, unmatched
from orchestrator.cli.app import app, installed_version
from orchestrator.cli.common import fail, load_registry
from participants_sdk import Participant

FORMATS: Final = ("yaml", "json")


class _Dumper(yaml.SafeDumper):
    """Writes a dict met twice in full, not as a YAML anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:  # noqa: ANN401, ARG002 - PyYAML's signature
        return True


@app.command(
    epilog=(
        "Examples:\n\n"
        "  sagawire asyncapi > asyncapi.yaml\n\n"
        "  sagawire asyncapi --participant orchestrator.demo.participants:demo_participants\n\n"
        "  sagawire asyncapi --service stock --format json --out stock.json"
    ),
)
def asyncapi(
    machines: Annotated[
        Path,
        typer.Option(
            "--machines",
            help="Machines folder or file (env SAGAWIRE_MACHINES).",
            envvar="SAGAWIRE_MACHINES",
        ),
    ] = Path("machines"),
    participants: Annotated[
        list[str] | None,
        typer.Option(
            "--participant",
            metavar="MODULE:ATTR",
            help="A participants_sdk.Participant whose pydantic models give the payloads of its "
            "service, as MODULE:ATTR (the current folder is searched first). ATTR is a "
            "Participant, a list of them, or a function of no arguments returning either. "
            "Repeatable; one participant per service.",
            show_default=False,
        ),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(
            help="Only this service: its command and reply channels, without the control "
            "channel (starting sagas, operators' requests), which the full document has.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write to this file instead of stdout.", dir_okay=False),
    ] = None,
    form: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
) -> None:
    """Write an AsyncAPI 3.0.0 document of the machines' messages over RabbitMQ.

    Channels: each service's commands and replies, and the control channel. Operations are a participant service's: it receives its commands and sends a reply to each; a client of the orchestrator sends the control requests.

    Payloads come from the pydantic models of the --participant given for a service; without one, a command's body follows its `input` template and a reply's is any object. Handlers no machine sends a command to are left out, with a note on stderr.
    """  # noqa: E501 - typer keeps line breaks: one paragraph, one line
    if form not in FORMATS:
        raise fail(f"--format {form!r}: use one of {', '.join(FORMATS)}", code=2)
    loaded = [found for spec in participants or [] for found in _load_participant(spec)]
    registry = load_registry(machines)
    try:
        document = asyncapi_document(
            registry, version=installed_version(), participants=loaded, service=service
        )
    except UnknownService as exc:
        raise fail(str(exc)) from None
    except AsyncApiError as exc:
        raise fail(str(exc), code=2) from None
    for line in unmatched(registry, loaded):
        typer.echo(f"note: {line}", err=True)
    if form == "json":
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    else:
        text = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc}") from None
    typer.echo(
        f"{out}: AsyncAPI {document['asyncapi']}, {len(document['channels'])} channels, "
        f"{len(document['operations'])} operations, "
        f"{len(document['components']['messages'])} messages"
    )


def _load_participant(spec: str) -> list[Participant]:
    """The participants `MODULE:ATTR` names; exits 2 saying what is wrong with it."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise fail(f"--participant {spec!r}: expected MODULE:ATTR, e.g. myservice.app:payments", 2)
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        value: object = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything on import
        raise fail(
            f"--participant {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}",
            2,
        ) from None
    for part in attr.split("."):
        if not hasattr(value, part):
            raise fail(f"--participant {spec!r}: {module_name!r} has no attribute {attr!r}", 2)
        value = getattr(value, part)
    if callable(value) and not isinstance(value, Participant | type):
        try:
            value = value()
        except Exception as exc:  # noqa: BLE001 - the user's factory may raise anything
            raise fail(
                f"--participant {spec!r}: calling {attr}() failed: {type(exc).__name__}: {exc}", 2
            ) from None
    found = list(value) if isinstance(value, list | tuple) else [value]
    if not found or not all(isinstance(item, Participant) for item in found):
        raise fail(
            f"--participant {spec!r}: {attr} gives {type(value).__name__}, not a Participant, "
            "a list of them, or a function of no arguments returning either",
            2,
        )
    return [item for item in found if isinstance(item, Participant)]
