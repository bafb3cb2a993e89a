"""Waiting for the daemon's verdict on a control request a command sent.

Applied: the saga in MongoDB shows it. Refused: the daemon dead-lettered the request to the
control DLQ with the reason; it is taken out of there and its reason returned. The DLQ is read
only when its depth changed since the last look, so a wait does not read it over and over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.adapters.rabbitmq import dead_letters
from participants_sdk import protocol

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection

    from orchestrator.adapters.mongo import MongoSagaStore
    from orchestrator.core.saga import Saga

CONTROL_DLQ = protocol.dead_letter_queue(protocol.CONTROL_QUEUE)
POLL_INTERVAL = 0.3


class Refused(Exception):
    """The daemon refused the request; the message is its reason."""


async def await_verdict(
    store: MongoSagaStore,
    connection: AbstractConnection,
    saga_id: str,
    request_id: str,
    *,
    applied: Callable[[Saga], bool],
    wait: float,
) -> Saga:
    """The saga once `applied(saga)`; `Refused(reason)`, or `TimeoutError` after `wait` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    seen_depth: int | None = None
    while loop.time() < deadline:
        saga = await store.load(saga_id)
        if saga is not None and applied(saga):
            return saga
        try:
            depth = await dead_letters.depth(connection, CONTROL_DLQ)
        except dead_letters.QueueMissing:
            depth = 0
        if depth != seen_depth:
            refused = (
                await dead_letters.take(connection, CONTROL_DLQ, request_id) if depth else None
            )
            if refused is not None:
                raise Refused(refused.reason)
            seen_depth = depth
        await asyncio.sleep(POLL_INTERVAL)
    raise TimeoutError(f"no verdict within {wait:g}s")
