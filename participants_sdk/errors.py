"""The participant SDK's exceptions.

    ParticipantError              root of every error the SDK raises on purpose
    ├── HandlerSignatureError     a `@command_handler` function has the wrong shape (a TypeError)
    ├── DuplicateHandlerError     a second handler for one command on one participant (a ValueError)
    └── BrokerError               the broker refused an operation
        ├── BrokerClosed          the connection is closed (a ConnectionError)
        ├── BrokerUnreachable     the first connection failed (a ConnectionError)
        ├── TopologyError         an exchange or queue never declared, or declared otherwise
        ├── AccessRefused         the broker's user lacks the permission for the operation
        ├── NotConfirmed          a publish whose fate is unknown: the connection went first
        ├── Unroutable            a published message no queue is bound for
        └── AlreadySettledError   a delivery settled twice (a RuntimeError)

Not errors, and so outside that tree: a handler raises `Reject` for a business failure (it
becomes the reply event, which the machine usually maps to compensation) and `RetryLater` to
have the command delivered again later.
"""

from __future__ import annotations


class ParticipantError(Exception):
    """Root of every error the participant SDK raises on purpose."""


class HandlerSignatureError(ParticipantError, TypeError):
    """A command handler that cannot be called the way the SDK calls it."""


class DuplicateHandlerError(ParticipantError, ValueError):
    """Two handlers for the same command on the same participant."""


class BrokerError(ParticipantError):
    pass


class BrokerClosed(BrokerError, ConnectionError):
    """The connection is closed: nothing can be published or consumed through it."""


class BrokerUnreachable(BrokerError, ConnectionError):
    """The first connection to the broker failed; the message names the URL, password hidden."""


class TopologyError(BrokerError):
    """An exchange or queue that was never declared, or declared with another kind."""


class AccessRefused(BrokerError):
    """The broker's user may not do this: see `sagawire topology permissions`."""


class NotConfirmed(BrokerError):
    """A publish the broker never confirmed nor refused: the message may or may not be there.

    Sending it again is safe when the receiver recognises a resend (a saga start is idempotent
    on its saga id; a command on its idempotency key).
    """


class Unroutable(BrokerError):
    """The broker returned a published message: no queue is bound for its routing key."""


class AlreadySettledError(BrokerError, RuntimeError):
    """A delivery was acked, requeued, dead-lettered or retried more than once."""


class Reject(Exception):
    """A business failure: the step did not happen and `event` says why.

    `Reject("payment_failed", reason="over limit")` replies with event `payment_failed` and body
    `{"reason": "over limit"}`, flagged rejected. The command is acked: retrying would not help.
    """

    def __init__(self, event: str, **details: object) -> None:
        if not event:
            raise ValueError("Reject needs an event name, e.g. Reject('payment_failed')")
        super().__init__(event, details)
        self.event = event
        self.details = details

    def __str__(self) -> str:
        return f"{self.event} {self.details}" if self.details else self.event


class RetryLater(Exception):
    """Ask for the command again after `delay` seconds (the participant's backoff when None).

    For a dependency that is down for a while. Counts towards the participant's `max_retries`,
    after which the command is dead-lettered, so a handler cannot loop forever.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if delay is not None and delay < 0:
            raise ValueError(f"RetryLater delay must be >= 0, got {delay}")
        super().__init__(reason or "retry requested")
        self.delay = delay
        self.reason = reason
