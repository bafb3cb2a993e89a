"""The broker a participant serves on: confirmed publishes, explicitly settled deliveries.

Implementations: `participants_sdk.memory.MemoryBroker` (in-process, for the embedded demo and
tests) and the RabbitMQ adapter. Every delivery is settled exactly once by one of `ack`,
`requeue`, `dead_letter` or `retry_later`; a consumer that dies without settling gets its
unsettled deliveries redelivered, flagged `redelivered`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from participants_sdk.protocol import WireMessage


class Delivery(Protocol):
    @property
    def message(self) -> WireMessage: ...

    @property
    def queue(self) -> str: ...

    @property
    def redelivered(self) -> bool: ...

    async def ack(self) -> None:
        """Done with it: the broker forgets the message."""

    async def requeue(self) -> None:
        """Give it back to the queue for another delivery (counts towards the delivery limit)."""

    async def dead_letter(self, reason: str) -> None:
        """Move it to `<queue>.dlq` with the reason and its origin in headers, then ack it."""

    async def retry_later(self, delay: float, headers: dict[str, object]) -> None:
        """Deliver it to the same queue again after `delay` seconds with extra headers, then ack.

        Retries with different delays never wait behind one another.
        """


DeliveryHandler = Callable[[Delivery], Awaitable[None]]


class Subscription(Protocol):
    async def cancel(self) -> None:
        """Stop delivering; deliveries in flight are still settled by their handlers."""


class Broker(Protocol):
    async def declare_service(self, service: str) -> None:
        """Declare what a participant of `service` needs: its command queue with its DLQ, and
        the exchanges and its reply queue when they are missing (the daemon declares those).
        """

    async def publish(self, exchange: str, routing_key: str, message: WireMessage) -> None:
        """Publish and return once the broker has taken responsibility for the message."""

    async def consume(
        self, queue: str, handler: DeliveryHandler, *, prefetch: int = 64
    ) -> Subscription:
        """Call `handler` for each delivery, at most `prefetch` unsettled at a time."""

    async def close(self) -> None:
        """Cancel consumers and release the connection; idempotent."""
