"""A connection for sending requests to the daemon's control queue, as the CLI and the gateway
do: `async with control_broker(url, ...) as broker`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from participants_sdk.rabbitmq import QueueType, RabbitBroker


@contextlib.asynccontextmanager
async def control_broker(
    amqp_url: str, *, queue_type: QueueType, delivery_limit: int, name: str
) -> AsyncIterator[RabbitBroker]:
    """A broker with the exchanges and the control queue declared (if the daemon has not yet),
    closed when the block ends."""
    broker = await RabbitBroker.connect(
        amqp_url, queue_type=queue_type, delivery_limit=delivery_limit, name=name
    )
    try:
        await broker.declare_topology([])
        yield broker
    finally:
        await broker.close()
