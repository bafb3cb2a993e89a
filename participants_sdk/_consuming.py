"""Running one delivery's handler so that its message is never stranded, whatever happens."""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from participants_sdk.protocol import WireMessage
from participants_sdk.transport import DeliveryHandler

_log = structlog.get_logger("participants_sdk.consuming")


class _Settleable(Protocol):
    @property
    def message(self) -> WireMessage: ...

    @property
    def queue(self) -> str: ...

    @property
    def pending(self) -> bool: ...

    async def requeue(self) -> None: ...


async def run_handler(handler: DeliveryHandler, delivery: _Settleable) -> None:
    """Run the handler; a delivery it leaves unsettled after raising or being cancelled goes
    back to its queue."""
    try:
        await handler(delivery)  # type: ignore[arg-type]
    except asyncio.CancelledError:
        if delivery.pending:  # the consumer stopped mid-delivery: the message goes back
            await delivery.requeue()
        raise
    except Exception:  # noqa: BLE001 - whatever a consumer raises, the message must not be lost
        if delivery.pending:  # settle first: a failing log call must not strand the message
            await delivery.requeue()
        _log.exception(
            "delivery handler raised; its message was requeued unless settled",
            queue=delivery.queue,
            message_id=delivery.message.message_id,
        )
    else:
        if delivery.pending:
            _log.warning(
                "delivery handler returned without settling; the message stays unacked",
                queue=delivery.queue,
                message_id=delivery.message.message_id,
            )
