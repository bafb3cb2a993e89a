"""An in-process broker with RabbitMQ's semantics, for the embedded demo and tests.

`MemoryBroker` is the server; `MemoryBroker.connect()` gives a `MemoryConnection`, which
implements the `Broker` port. What it keeps faithful, because Sagawire's guarantees rest on it:

- topic (`*`, `#`) and direct exchanges, and the default exchange (routing key = queue name);
- a message that no queue is bound for is kept in `MemoryBroker.unroutable`, never dropped;
- round-robin across a queue's consumers, at most `prefetch` unsettled deliveries per consumer,
  each delivery handled in its own task;
- a returned delivery (requeue, a handler that raised, a closed connection) goes back to the
  front of its queue flagged `redelivered` and counts towards `delivery_limit`; past it the
  message is dead-lettered, as a quorum queue does;
- closing a connection returns its unsettled deliveries: that is how tests simulate a crash.
  Settling one of them afterwards is a no-op, like acking on a dead channel.

Left out: persistence, TTLs, priorities, exclusive consumers.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from participants_sdk import protocol
from participants_sdk._memory_core import Consumer, Core
from participants_sdk.errors import BrokerClosed

if TYPE_CHECKING:
    from collections.abc import Iterable

    from participants_sdk.transport import DeliveryHandler


class MemorySubscription:
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    async def cancel(self) -> None:
        self._consumer.cancel()


class MemoryConnection:
    """One client connection to a `MemoryBroker`; implements the `Broker` port."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._consumers: list[Consumer] = []
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise BrokerClosed("the memory broker connection is closed")

    async def declare_topology(self, services: Iterable[str]) -> None:
        self._check_open()
        core = self._core
        core.declare_exchange(protocol.COMMANDS_EXCHANGE, "topic")
        for exchange in (
            protocol.REPLIES_EXCHANGE,
            protocol.CONTROL_EXCHANGE,
            protocol.DEAD_LETTER_EXCHANGE,
        ):
            core.declare_exchange(exchange, "direct")
        core.declare_queue(protocol.CONTROL_QUEUE)
        core.bind(protocol.CONTROL_EXCHANGE, protocol.CONTROL_ROUTING_KEY, protocol.CONTROL_QUEUE)
        for service in services:
            core.declare_queue(protocol.command_queue(service))
            core.bind(
                protocol.COMMANDS_EXCHANGE,
                protocol.command_binding(service),
                protocol.command_queue(service),
            )
            core.declare_queue(protocol.reply_queue(service))
            core.bind(protocol.REPLIES_EXCHANGE, service, protocol.reply_queue(service))

    async def declare_service(self, service: str) -> None:
        await self.declare_topology([service])

    async def publish(self, exchange: str, routing_key: str, message: protocol.WireMessage) -> None:
        self._check_open()
        self._core.route(exchange, routing_key, message)

    async def consume(
        self, queue: str, handler: DeliveryHandler, *, prefetch: int = 64
    ) -> MemorySubscription:
        self._check_open()
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        consumer = Consumer(self._core.queue(queue), handler, prefetch)
        consumer.queue.consumers.append(consumer)
        self._consumers.append(consumer)
        self._core.pump(consumer.queue)
        return MemorySubscription(consumer)

    async def close(self) -> None:
        """Cancel consumers and return unsettled deliveries to the front of their queues."""
        if self.closed:
            return
        self.closed = True
        for consumer in self._consumers:
            consumer.cancel()
        orphans = sorted(
            (d for c in self._consumers for d in c.unsettled.values()), key=lambda d: d.tag
        )
        for delivery in reversed(orphans):  # appended left one by one: keeps their order
            delivery.stale = True
            delivery.consumer.release(delivery)
            self._core.give_back(delivery.consumer.queue, delivery.entry)
        self._consumers.clear()
        self._core.changed.set()


class MemoryBroker:
    """The in-process server: topology, queues, and inspection helpers for tests and the CLI."""

    def __init__(self, *, delivery_limit: int = 20) -> None:
        if delivery_limit < 0:
            raise ValueError(f"delivery_limit must be >= 0, got {delivery_limit}")
        self._core = Core(delivery_limit)

    def connect(self) -> MemoryConnection:
        return MemoryConnection(self._core)

    @property
    def delivery_limit(self) -> int:
        return self._core.delivery_limit

    @property
    def unroutable(self) -> list[protocol.WireMessage]:
        """Messages published where no queue was bound, in publish order."""
        return self._core.unroutable

    def bind(self, exchange: str, binding_key: str, queue: str) -> None:
        """Declare `queue` (with its DLQ) if needed and bind it, e.g. a tap on `#` in a test."""
        self._core.declare_queue(queue)
        self._core.bind(exchange, binding_key, queue)

    def queue_names(self) -> list[str]:
        return sorted(self._core.queues)

    def queue_depth(self, name: str) -> int:
        """Messages ready in the queue, not counting unsettled deliveries."""
        return len(self._core.queue(name).ready)

    def messages(self, name: str) -> list[protocol.WireMessage]:
        """The ready messages in delivery order, read without consuming them."""
        return [entry.message for entry in self._core.queue(name).ready]

    def unsettled(self, name: str) -> int:
        """Deliveries from the queue that consumers hold and have not settled."""
        return len(self._core.queue(name).unsettled)

    async def wait_idle(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a bounded drain whose error says what is still busy
        """Wait until nothing is left to do: no message ready in a queue that has a consumer,
        nothing unsettled, no retry pending and no delivery handler running.

        Queues nobody consumes (replies in a participant test, the DLQs) may hold messages.
        """
        try:
            async with asyncio.timeout(timeout):
                while self._core.busy():
                    self._core.changed.clear()
                    await self._core.changed.wait()
        except TimeoutError:
            busy = "; ".join(self._core.busy())
            raise TimeoutError(f"memory broker still busy after {timeout}s: {busy}") from None
