"""What `SagaHarness` runs on: the memory adapters, or a real RabbitMQ and MongoDB.

    async with SagaHarness(registry, backend=RabbitMongoBackend(amqp_url, mongodb_url)) as h:
        ...

Both give the harness the same few things: a store, broker connections, a way to drop one as a
crashing process would (`abort`), the sagas stored, and `wait_idle`: nothing left to deliver.

On RabbitMQ nothing reports "idle", so the backend works it out from what it can see: no message
ready in a queue its connections consume (or in their delay queues), no delivery held unsettled
and no publish awaiting its confirm on any of its connections, twice in a row. Every client of
the test goes through the backend's connections, so nothing else puts messages in those queues.

The queue names are fixed by the wire protocol, so a backend first deletes every queue of the
topology of its services; when others share the broker, give each test run a virtual host of
its own (named in `amqp_url`). MongoDB gets a database per backend, dropped at `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import aio_pika
import aiormq.exceptions

from orchestrator.adapters.memory import MemorySagaStore
from orchestrator.adapters.mongo import MongoSagaStore
from participants_sdk import protocol
from participants_sdk.memory import MemoryBroker, MemoryConnection
from participants_sdk.rabbitmq import RETRY_BUCKETS_MS, RabbitBroker, RabbitDelivery, delay_queue

if TYPE_CHECKING:
    from orchestrator.core.saga import Saga
    from orchestrator.ports import Broker, Delivery, DeliveryHandler, SagaStore, Subscription

__all__ = ["HarnessBackend", "MemoryBackend", "RabbitMongoBackend", "topology_queues"]

QUIET_POLLS = 2
POLL_INTERVAL = 0.01


class HarnessBackend(Protocol):
    kind: str

    @property
    def store(self) -> SagaStore: ...

    async def start(self, services: Iterable[str]) -> None:
        """Get ready for a harness whose machines talk to `services`."""

    async def connect(self) -> Broker:
        """A new broker connection, as a new process would open."""

    async def abort(self, connection: Broker) -> None:
        """Drop `connection` as a dying process would: what it held goes back to its queues."""

    async def wait_idle(self, timeout: float) -> None:  # noqa: ASYNC109 - bounded, says what is busy
        """Return once nothing is left to deliver; `TimeoutError` naming what is still busy."""

    async def sagas(self) -> list[Saga]:
        """Every saga in the store."""

    async def close(self) -> None: ...


class MemoryBackend:
    """The in-process broker and store: fast, exact, and inspectable (`broker`, `store`)."""

    kind = "memory"

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.memory_store = MemorySagaStore()

    @property
    def store(self) -> MemorySagaStore:
        return self.memory_store

    async def start(self, services: Iterable[str]) -> None:
        del services  # a new memory broker has nothing left over

    async def connect(self) -> MemoryConnection:
        return self.broker.connect()

    async def abort(self, connection: Broker) -> None:
        # Closing a memory connection returns its unsettled deliveries, and settling one of
        # them later does nothing: what a dead process's connection does.
        await connection.close()

    async def wait_idle(self, timeout: float) -> None:  # noqa: ASYNC109 - see HarnessBackend
        await self.broker.wait_idle(timeout)

    async def sagas(self) -> list[Saga]:
        return self.memory_store.all()

    async def close(self) -> None:
        await self.memory_store.close()


class _TrackedConnection:
    """A RabbitMQ connection that knows what it has in flight, for `wait_idle`."""

    def __init__(self, broker: RabbitBroker) -> None:
        self.broker = broker
        self.consumed: set[str] = set()
        self._held: set[RabbitDelivery] = set()
        self._publishing = 0

    async def declare_topology(self, services: Iterable[str]) -> None:
        await self.broker.declare_topology(services)

    async def declare_service(self, service: str) -> None:
        await self.broker.declare_service(service)

    async def publish(self, exchange: str, routing_key: str, message: protocol.WireMessage) -> None:
        self._publishing += 1
        try:
            await self.broker.publish(exchange, routing_key, message)
        finally:
            self._publishing -= 1

    async def consume(
        self, queue: str, handler: DeliveryHandler, *, prefetch: int = 64
    ) -> Subscription:
        async def tracked(delivery: Delivery) -> None:
            if isinstance(delivery, RabbitDelivery):
                self._held.add(delivery)
            await handler(delivery)

        subscription = await self.broker.consume(queue, tracked, prefetch=prefetch)
        self.consumed.add(queue)
        return subscription

    async def close(self) -> None:
        await self.broker.close()

    def queues(self) -> set[str]:
        """The queues whose ready messages this connection would take or get back."""
        return self.consumed | set(self.broker.delay_queues)

    def busy(self) -> list[str]:
        self._held = {delivery for delivery in self._held if delivery.pending}
        reasons = [f"{d.queue}: message {d.message.message_id} unsettled" for d in self._held]
        if self._publishing:
            reasons.append(f"{self._publishing} publishes awaiting their confirm")
        return reasons


class RabbitMongoBackend:
    """A real RabbitMQ and a MongoDB-protocol server, for running a suite against both."""

    kind = "rabbitmq+mongodb"

    def __init__(self, amqp_url: str, mongodb_url: str, *, database: str | None = None) -> None:
        self.amqp_url = amqp_url
        self.mongodb_url = mongodb_url
        self.database = database or f"sagawire_harness_{uuid.uuid4().hex[:8]}"
        self._store: MongoSagaStore | None = None
        self._admin: aio_pika.abc.AbstractConnection | None = None
        self._queues: list[str] = []
        self._admin_channel: aio_pika.abc.AbstractChannel | None = None
        self._connections: list[_TrackedConnection] = []

    @property
    def store(self) -> MongoSagaStore:
        if self._store is None:
            raise RuntimeError("the backend is not started")
        return self._store

    async def start(self, services: Iterable[str]) -> None:
        self._admin = await aio_pika.connect(self.amqp_url, timeout=10)
        self._queues = topology_queues(services)
        await delete_queues(self._admin, self._queues)
        self._store = await MongoSagaStore.connect(self.mongodb_url, self.database)
        await self._store.ensure_indexes()

    async def connect(self) -> _TrackedConnection:
        name = f"sagawire-harness-{len(self._connections)}"
        connection = _TrackedConnection(await RabbitBroker.connect(self.amqp_url, name=name))
        self._connections.append(connection)
        return connection

    async def abort(self, connection: Broker) -> None:
        if not isinstance(connection, _TrackedConnection):
            raise TypeError(f"not a connection of this backend: {connection!r}")
        self._connections.remove(connection)
        await connection.broker.abort()

    async def wait_idle(self, timeout: float) -> None:  # noqa: ASYNC109 - see HarnessBackend
        """Poll until idle. The deadline is checked between polls, never by cancelling one: a
        channel open or declare cancelled half-way can break the admin connection for good."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        busy: list[str] = []
        quiet = 0
        while quiet < QUIET_POLLS:
            if loop.time() >= deadline:
                raise TimeoutError(f"RabbitMQ still busy after {timeout}s: {'; '.join(busy)}")
            await asyncio.sleep(POLL_INTERVAL)
            busy = await self._busy()
            quiet = 0 if busy else quiet + 1
        await self.store.flush()  # queued outbox marks: a load reads them back

    async def _busy(self) -> list[str]:
        if self._admin is None:
            raise RuntimeError("the backend is not started")
        reasons = [reason for c in self._connections for reason in c.busy()]
        queues = sorted({queue for c in self._connections for queue in c.queues()})
        if self._admin_channel is None or self._admin_channel.is_closed:
            self._admin_channel = await self._admin.channel()
        for queue in queues:
            try:
                declared = await self._admin_channel.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                self._admin_channel = await self._admin.channel()
                continue  # not declared (yet): holds nothing
            ready = declared.declaration_result.message_count
            if ready:
                reasons.append(f"{queue}: {ready} ready")
        return reasons

    async def sagas(self) -> list[Saga]:
        loaded = [await self.store.load(saga_id) for saga_id in await self.store.queries.saga_ids()]
        return [saga for saga in loaded if saga is not None]

    async def close(self) -> None:
        connections, self._connections = self._connections, []
        for connection in connections:
            await connection.close()
        if self._store is not None:
            await self._store.client.drop_database(self.database)
            await self._store.close()
        if self._admin is not None:
            # Every quorum queue left behind keeps a process ticking in the broker.
            await delete_queues(self._admin, self._queues)
            await self._admin.close()


def topology_queues(services: Iterable[str]) -> list[str]:
    """Every queue of the topology for these services: work queues, DLQs and delay queues."""
    work = [protocol.CONTROL_QUEUE]
    for service in services:
        work += [protocol.command_queue(service), protocol.reply_queue(service)]
    queues = []
    for queue in work:
        queues += [queue, protocol.dead_letter_queue(queue)]
        queues += [delay_queue(queue, ms) for ms in RETRY_BUCKETS_MS]
    return queues


async def delete_queues(
    connection: aio_pika.abc.AbstractConnection, queues: list[str]
) -> list[str]:
    """Delete those of `queues` that exist; the ones deleted.

    A missing queue answers NOT_FOUND to the passive declare, which closes the channel: then a
    new one is opened for the next queue.
    """
    deleted = []
    channel = await connection.channel()
    try:
        for queue in queues:
            try:
                await channel.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                channel = await connection.channel()
                continue
            await channel.queue_delete(queue)
            deleted.append(queue)
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError):
            await channel.close()
    return deleted
