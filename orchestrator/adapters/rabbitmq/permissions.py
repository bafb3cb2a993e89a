"""The least RabbitMQ permissions each side of the wire needs, as `rabbitmqctl` patterns.

RabbitMQ checks a regular expression per kind of access against the name of the exchange or
queue: *configure* to declare or delete it, *write* to publish to an exchange or bind a queue
(and, for a queue declared with a dead-letter exchange, on that exchange), *read* to consume
from a queue or bind from an exchange (and on a queue declared with a dead-letter exchange).
A passive declaration needs none.

A participant of service `S` gets:

- read on `sagawire.S.commands`: it consumes its commands;
- write on `sagawire.replies`: it publishes its replies, and on `sagawire.dlx`: it
  dead-letters a command it cannot handle with the reason in headers;
- all three on its retry exchange `sagawire.S.commands.retry` and delay queues
  `sagawire.S.commands.delay.<ms>` (declared on first retry), and write on its command queue
  to bind it to its retry exchange.

Nothing else: it cannot declare, consume or bind any other queue, and it cannot publish to
`sagawire.commands`, `sagawire.control` or the default exchange. Its queues are declared by
the daemon, which declares the queues of every service its machines name, so the daemon starts
first.

The daemon gets all three on the four exchanges, the control queue and each service's command
and reply queues with their DLQs: it declares them (a queue declared with a dead-letter
exchange needs read on itself and write on that exchange), publishes commands, consumes
replies and control requests, and dead-letters what it refuses. The operator's CLI (`sagas`,
`dlq`, `start`) needs the same. It has nothing on the participants' retry exchanges and
delay queues.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import Final

from participants_sdk import protocol

_SERVICE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_ANY_SERVICE: Final = "[A-Za-z_][A-Za-z0-9_-]*"


@dataclasses.dataclass(frozen=True, slots=True)
class Permissions:
    """Patterns for `rabbitmqctl set_permissions -p VHOST USER CONFIGURE WRITE READ`."""

    configure: str
    write: str
    read: str

    def command(self, user: str, vhost: str = "/") -> str:
        """The `rabbitmqctl` command line that grants them, quoted for a POSIX shell."""
        return (
            f"rabbitmqctl set_permissions -p {shlex.quote(vhost)} {shlex.quote(user)} "
            f"{shlex.quote(self.configure)} {shlex.quote(self.write)} {shlex.quote(self.read)}"
        )


def _any_of(*patterns: str) -> str:
    return "^(" + "|".join(patterns) + ")$"


def participant_permissions(service: str) -> Permissions:
    """What a RabbitMQ user for participant `service` needs, and no more."""
    if not _SERVICE.fullmatch(service):
        raise ValueError(f"service name {service!r} must match {_SERVICE.pattern}")
    commands = re.escape(protocol.command_queue(service))
    retry = commands + r"\.retry"
    delays = commands + r"\.delay\.[0-9]+"
    return Permissions(
        configure=_any_of(retry, delays),
        write=_any_of(
            re.escape(protocol.REPLIES_EXCHANGE),
            re.escape(protocol.DEAD_LETTER_EXCHANGE),
            commands,
            retry,
            delays,
        ),
        read=_any_of(commands, retry, delays),
    )


def daemon_permissions() -> Permissions:
    """What the orchestrator daemon (and the operator's CLI) needs, for any service."""
    daemon_owned = (
        "(commands|replies|control|dlx)",  # the exchanges, and the control queue
        r"control\.dlq",
        _ANY_SERVICE + r"\.(commands|replies)(\.dlq)?",
    )
    names = r"^sagawire\.(" + "|".join(daemon_owned) + ")$"
    return Permissions(configure=names, write=names, read=names)
