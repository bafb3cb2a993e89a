"""Incoming deliveries: the one place that decides ack, dead-letter or requeue.

A delivery's message is read (`codec`), told to its saga's actor, and settled by the outcome:
acked once applied; dead-lettered when the decision or an error in `NOT_RETRIED` says it can
never be processed; requeued when the runtime stops or the store or broker keeps failing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import structlog

from orchestrator.core.machines import UnknownMachine
from orchestrator.core.messages import Decision, Disposition, Message
from orchestrator.core.pauses import MachinePaused
from orchestrator.errors import RuntimeStopped, StoreRefused
from orchestrator.ports import Delivery
from orchestrator.runtime.actor import UnknownSaga
from orchestrator.runtime.codec import InvalidMessage, parse_control, parse_reply
from orchestrator.runtime.stats import UNKNOWN_SERVICE, RuntimeStats
from participants_sdk import protocol
from participants_sdk.headers import bounded

log = structlog.get_logger("sagawire.runtime")


REQUEUE: Final = None
"""In `NOT_RETRIED`: the delivery goes back to its queue, for another runtime; counted as
requeued while stopping, not as dead-lettered."""

NOT_RETRIED: Final[tuple[tuple[type[Exception], str | None], ...]] = (
    (InvalidMessage, "invalid_message"),
    (UnknownSaga, "unknown_saga"),
    (UnknownMachine, "unknown_machine"),
    (MachinePaused, "refused"),
    (StoreRefused, "unstorable"),
    (RuntimeStopped, REQUEUE),
)
"""Errors that trying again cannot mend, and what becomes of the delivery: the dead-letter kind
it is counted and dead-lettered under, or `REQUEUE`. Any other error is retried while it lasts
(`transient_give_up`), then the delivery is requeued."""

NOT_RETRIED_ERRORS: Final = tuple(error for error, _ in NOT_RETRIED)


def settlement(exc: Exception) -> str | None:
    """The dead-letter kind of an error in `NOT_RETRIED`, or `REQUEUE`."""
    return next(kind for error, kind in NOT_RETRIED if isinstance(exc, error))


DEAD_LETTERED: Final = frozenset(
    {
        Disposition.INVALID,
        Disposition.UNEXPECTED,
        Disposition.UNSTORABLE,
        Disposition.REFUSED,  # an operator request or a conflicting start: the DLQ says why
    }
)
"""Decisions whose message is dead-lettered under the disposition's name, not acked."""

Tell = Callable[[str, Message], Awaitable[Decision | None]]


class Deliveries:
    """The consumers' handlers: `on_reply` for the reply queues, `on_control` for control.

    A dead letter is counted under the service whose reply queue it came from, one of
    `services`; a queue of none of them counts as `UNKNOWN_SERVICE`, a control request as "".
    """

    def __init__(self, tell: Tell, stats: RuntimeStats, *, services: Iterable[str] = ()) -> None:
        self._tell = tell
        self._stats = stats
        self._services = {protocol.reply_queue(service): service for service in services}
        self._services[protocol.CONTROL_QUEUE] = ""

    async def on_reply(self, delivery: Delivery) -> None:
        await self._deliver(delivery, _reply_message)

    async def on_control(self, delivery: Delivery) -> None:
        await self._deliver(delivery, _control_message)

    async def _deliver(
        self, delivery: Delivery, parse: Callable[[Delivery], tuple[str, Message]]
    ) -> None:
        message = delivery.message
        try:
            saga_id, core_message = parse(delivery)
            with structlog.contextvars.bound_contextvars(
                saga_id=saga_id, message_id=message.message_id, type=message.type
            ):
                decision = await self._tell(saga_id, core_message)
        except NOT_RETRIED_ERRORS as exc:
            kind = settlement(exc)
            if kind is REQUEUE:
                await delivery.requeue()
                self._stats.requeued_stopping += 1
            else:
                await self._dead_letter(delivery, kind, str(exc))
        except Exception:
            log.exception("delivery_requeued", queue=delivery.queue, message_id=message.message_id)
            self._stats.requeued += 1
            await delivery.requeue()
        else:
            if decision is not None and decision.disposition in DEAD_LETTERED:
                await self._dead_letter(delivery, decision.disposition.value, decision.reason or "")
            else:
                await delivery.ack()

    async def _dead_letter(self, delivery: Delivery, kind: str, reason: str) -> None:
        self._stats.dead_lettered[kind, self._services.get(delivery.queue, UNKNOWN_SERVICE)] += 1
        reason = bounded(f"{kind}: {reason}")
        log.warning(
            "dead_lettered",
            queue=delivery.queue,
            kind=kind,
            reason=reason,
            message_id=delivery.message.message_id,
        )
        await delivery.dead_letter(reason)


def _reply_message(delivery: Delivery) -> tuple[str, Message]:
    saga_id, reply = parse_reply(delivery.message, queue=delivery.queue)
    return saga_id, reply


def _control_message(delivery: Delivery) -> tuple[str, Message]:
    saga_id, request, _machine = parse_control(delivery.message)
    return saga_id, request
