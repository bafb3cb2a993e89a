"""Broker backends for the contract suite: the memory broker and a real RabbitMQ.

A test asks its backend for connections (`await backend.connect()`) and unique service names
(`backend.service()`); the backend closes every connection and, for RabbitMQ, deletes every queue
it handed out at teardown. The shared topology (the four `sagawire.*` exchanges and the control
queue) stays: it is what any Sagawire daemon on the node declares, and others may be using it.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from participants_sdk import protocol
from participants_sdk.memory import MemoryBroker, MemoryConnection
from participants_sdk.rabbitmq import RETRY_BUCKETS_MS, RabbitBroker, delay_queue
from participants_sdk.transport import Broker, Delivery
from tests.services import ServicesUnavailable, service_urls

ROOT = Path(__file__).resolve().parents[2]


def amqp_url() -> str:
    """The test broker's URL (see tests.services); fails, never skips."""
    try:
        return service_urls(ROOT).amqp
    except ServicesUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


class MemoryBackend:
    kind = "memory"

    def __init__(self, *, delivery_limit: int = 20) -> None:
        self.server = MemoryBroker(delivery_limit=delivery_limit)
        self._connections: list[MemoryConnection] = []

    async def connect(self, **_: Any) -> MemoryConnection:
        connection = self.server.connect()
        self._connections.append(connection)
        return connection

    def service(self) -> str:
        return unique("svc")

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()


class RabbitBackend:
    kind = "rabbitmq"

    def __init__(self, url: str) -> None:
        self.url = url
        self._brokers: list[RabbitBroker] = []
        self._queues: set[str] = set()

    async def connect(self, **options: Any) -> RabbitBroker:
        options.setdefault("name", unique("sagawire-test-"))
        broker = await RabbitBroker.connect(self.url, **options)
        self._brokers.append(broker)
        return broker

    def service(self) -> str:
        service = unique("svc")
        self.track(protocol.command_queue(service))
        self.track(protocol.reply_queue(service))
        return service

    def queue(self) -> str:
        name = unique("sagawire.test.")
        self.track(name)
        return name

    def track(self, queue: str) -> None:
        """Delete `queue`, its DLQ and its delay queues at teardown."""
        self._queues.update({queue, protocol.dead_letter_queue(queue)})
        self._queues.update(delay_queue(queue, ms) for ms in RETRY_BUCKETS_MS)

    async def close(self) -> None:
        for broker in self._brokers:
            await broker.close()
        if not self._queues:
            return
        # A connection of its own: the brokers under test may be closed or broken by now.
        connection = await aio_pika.connect(self.url, timeout=5)
        async with connection:
            channel = await connection.channel()
            for queue in sorted(self._queues):
                await channel.queue_delete(queue)  # deleting a missing queue is fine


async def open_backend(kind: str) -> MemoryBackend | RabbitBackend:
    if kind == "memory":
        return MemoryBackend()
    return RabbitBackend(amqp_url())


class Recorder:
    """A delivery handler that records what it gets and settles it as told.

    `settle=None` leaves deliveries unsettled; `hold=True` keeps each handler running until
    `release()`, which shows how many handlers run at once.
    """

    def __init__(self, settle: str | None = "ack", *, hold: bool = False) -> None:
        self.settle = settle
        self.deliveries: list[Delivery] = []
        self.arrived: list[float] = []
        self.running = 0
        self.most_running = 0
        self._released = asyncio.Event()
        self._arrival = asyncio.Event()
        if not hold:
            self._released.set()

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self.arrived.append(asyncio.get_running_loop().time())
        self._arrival.set()
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self._released.wait()
            if self.settle == "ack":
                await delivery.ack()
            elif self.settle == "requeue":
                await delivery.requeue()
        finally:
            self.running -= 1

    def release(self) -> None:
        self._released.set()

    @property
    def messages(self) -> list[protocol.WireMessage]:
        return [d.message for d in self.deliveries]

    async def wait_for(self, count: int, within: float = 5.0) -> None:
        try:
            async with asyncio.timeout(within):
                while len(self.deliveries) < count:
                    self._arrival.clear()
                    await self._arrival.wait()
        except TimeoutError:
            raise AssertionError(
                f"got {len(self.deliveries)} deliveries in {within}s, expected {count}"
            ) from None


async def collect(
    broker: Broker, queue: str, *, expect: int | None = None, within: float = 1.0
) -> list[protocol.WireMessage]:
    """Consume `queue` and ack what arrives: until `expect` messages, or for `within` seconds."""
    recorder = Recorder()
    subscription = await broker.consume(queue, recorder, prefetch=64)
    try:
        if expect is None:
            await asyncio.sleep(within)
        else:
            await recorder.wait_for(expect, within=within)
            await asyncio.sleep(0.05)  # anything beyond `expect` shows up too
    finally:
        await subscription.cancel()
    return recorder.messages
