"""Raw RabbitMQ I/O for the end-to-end tests: a clean topology, sagas started as a client starts
them, bytes published past the SDK's encoding, and dead letters read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aio_pika
from e2e_processes import SERVICES

from orchestrator.demo.participants import example_order
from orchestrator.testing.backends import delete_queues, topology_queues
from participants_sdk import protocol
from participants_sdk.rabbitmq import RabbitBroker
from participants_sdk.saga_client import SagaClient


async def reset_broker(url: str, services: Iterable[str]) -> list[str]:
    """Delete every queue of the topology (what a former test left must not reach this one).

    Returns the queues that existed.
    """
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        return await delete_queues(connection, topology_queues(services))


@contextlib.asynccontextmanager
async def client_broker(url: str):
    """The SDK's broker, as a service starting sagas would use it, with the topology declared."""
    broker = await RabbitBroker.connect(url, name="sagawire-e2e-test")
    try:
        await broker.declare_topology(SERVICES)
        yield broker
    finally:
        await broker.close()


async def start_orders(
    broker: RabbitBroker, order_ids: Iterable[str], *, parallel: int = 50
) -> None:
    """Start one order saga per id (saga id = order id) through the control queue."""
    client = SagaClient(broker)
    limit = asyncio.Semaphore(parallel)

    async def start(order_id: str) -> None:
        async with limit:
            await client.start_saga("order", example_order(order_id), saga_id=order_id)

    await asyncio.gather(*(start(order_id) for order_id in order_ids))


async def publish_raw(
    url: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    type: str,  # noqa: A002 - the AMQP property
    correlation_id: str | None = None,
    headers: dict[str, Any] | None = None,
    content_type: str = protocol.CONTENT_TYPE_JSON,
) -> str:
    """Publish exactly these bytes and properties, bypassing the SDK's encoding, confirmed;
    returns the message id."""
    message_id = protocol.new_message_id()
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(
            aio_pika.Message(
                body=body,
                headers=headers or {},
                content_type=content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
                correlation_id=correlation_id,
                type=type,
            ),
            routing_key,
            mandatory=True,
        )
    return message_id


def header_text(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    type: str | None
    headers: dict[str, Any]

    @property
    def reason(self) -> str:
        return header_text(self.headers, protocol.H_DEAD_LETTER_REASON) or ""


async def read_queue(
    url: str,
    queue: str,
    *,
    expect: int,
    timeout: float,  # noqa: ASYNC109
) -> list[DeadLetter]:
    """Take (and ack) messages from `queue` until `expect` came or `timeout` seconds passed."""
    taken: list[DeadLetter] = []
    deadline = time.monotonic() + timeout
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=True)
        while len(taken) < expect and time.monotonic() < deadline:
            incoming = await source.get(no_ack=False, fail=False, timeout=5)
            if incoming is None:
                await asyncio.sleep(0.1)
                continue
            taken.append(DeadLetter(incoming.message_id, incoming.type, dict(incoming.headers)))
            await incoming.ack()
    return taken
