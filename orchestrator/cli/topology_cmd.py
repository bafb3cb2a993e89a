"""`sagawire topology permissions`: least-privilege RabbitMQ users for participants and daemon."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from orchestrator.adapters.rabbitmq.permissions import (
    Permissions,
    daemon_permissions,
    participant_permissions,
)
from orchestrator.cli.app import app
from orchestrator.cli.common import AsJson, fail
from participants_sdk import protocol
from participants_sdk.rabbitmq import retry_exchange

topology_app = typer.Typer(
    help="The RabbitMQ side of Sagawire: exchanges, queues and who may use them.",
    no_args_is_help=True,
)


@topology_app.command(
    epilog=(
        "Examples:\n\n"
        "  sagawire topology permissions stock\n\n"
        "  sagawire topology permissions stock --vhost shop --user stock-svc --json"
    ),
)
def permissions(
    service: Annotated[str, typer.Argument(help="The participant service, e.g. stock.")],
    vhost: Annotated[str, typer.Option(help="The RabbitMQ virtual host.")] = "/",
    user: Annotated[
        str | None,
        typer.Option(help="The participant's RabbitMQ user [default: sagawire-SERVICE]."),
    ] = None,
    daemon_user: Annotated[
        str, typer.Option(help="The RabbitMQ user of the daemon and the operator's CLI.")
    ] = "sagawire-daemon",
    as_json: AsJson = False,
) -> None:
    """Print the `rabbitmqctl set_permissions` lines for SERVICE's participant and the daemon.

    The participant may consume its own commands, publish replies, dead-letter and retry its
    own commands, and nothing else: no other service's queue, no publishing commands. Its
    queues are declared by the daemon, so start the daemon first. Exits 0; 2 for a service
    name Sagawire would refuse.
    """
    try:
        participant = participant_permissions(service)
    except ValueError as exc:
        raise fail(str(exc), code=2) from None
    daemon = daemon_permissions()
    user = user or f"sagawire-{service}"
    if as_json:
        report = {
            "vhost": vhost,
            "participant": {"service": service, "user": user, **_fields(participant, user, vhost)},
            "daemon": {"user": daemon_user, **_fields(daemon, daemon_user, vhost)},
        }
        typer.echo(json.dumps(report, indent=2))
        return
    commands = protocol.command_queue(service)
    typer.echo(
        f"# participant {service!r}: consumes {commands}, publishes replies to "
        f"{protocol.REPLIES_EXCHANGE},\n# dead-letters to {protocol.DEAD_LETTER_EXCHANGE}, "
        "retries through "
        f"{retry_exchange(commands)} and its delay queues\n"
        f"{participant.command(user, vhost)}\n\n"
        "# daemon and operator CLI: declares the topology of every service, publishes "
        "commands,\n# consumes replies and control requests, reads and replays dead letters\n"
        f"{daemon.command(daemon_user, vhost)}"
    )


def _fields(permissions: Permissions, user: str, vhost: str) -> dict[str, str]:
    return {
        "configure": permissions.configure,
        "write": permissions.write,
        "read": permissions.read,
        "command": permissions.command(user, vhost),
    }


app.add_typer(topology_app, name="topology")
