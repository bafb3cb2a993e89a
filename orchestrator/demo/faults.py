"""Faults a demo service can inject into its own replies, for the reliability tests.

`FaultyReplies` wraps the broker a participant serves on. It can publish every reply twice (the
same message, as a redelivering network would), and hold back the reply to the first attempt of
a share of the sagas for a while, sending it after the step timed out and its second attempt was
answered: late and out of order. The orchestrator must apply each step's outcome once, whatever
arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable

import structlog

from orchestrator.ports import Broker, DeliveryHandler, Subscription
from participants_sdk import protocol

_log = structlog.get_logger(__name__)


def chosen(saga_id: str, share: float) -> bool:
    """Whether `saga_id` is among `share` of all saga ids, the same in every process."""
    digest = hashlib.sha256(f"late:{saga_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class FaultyReplies:
    """A `Broker` that duplicates and delays the replies published through it."""

    def __init__(
        self,
        broker: Broker,
        *,
        duplicate: bool = False,
        late_share: float = 0.0,
        late_by: float = 0.0,
    ) -> None:
        self._broker = broker
        self._duplicate = duplicate
        self._late_share = late_share
        self._late_by = late_by
        self._held: set[asyncio.Task[None]] = set()
        self.duplicated = 0
        self.delayed = 0

    async def declare_topology(self, services: Iterable[str]) -> None:
        await self._broker.declare_topology(services)

    async def declare_service(self, service: str) -> None:
        await self._broker.declare_service(service)

    async def consume(
        self, queue: str, handler: DeliveryHandler, *, prefetch: int = 64
    ) -> Subscription:
        return await self._broker.consume(queue, handler, prefetch=prefetch)

    async def publish(self, exchange: str, routing_key: str, message: protocol.WireMessage) -> None:
        if exchange != protocol.REPLIES_EXCHANGE:
            await self._broker.publish(exchange, routing_key, message)
            return
        if (
            self._late_by > 0
            and message.header_int(protocol.H_ATTEMPT) == 1
            and chosen(message.correlation_id or "", self._late_share)
        ):
            task = asyncio.get_running_loop().create_task(self._later(routing_key, message))
            self._held.add(task)
            task.add_done_callback(self._held.discard)
            return
        await self._send(routing_key, message)

    async def _send(self, routing_key: str, message: protocol.WireMessage) -> None:
        await self._broker.publish(protocol.REPLIES_EXCHANGE, routing_key, message)
        if self._duplicate:
            await self._broker.publish(protocol.REPLIES_EXCHANGE, routing_key, message)
            self.duplicated += 1

    async def _later(self, routing_key: str, message: protocol.WireMessage) -> None:
        await asyncio.sleep(self._late_by)
        try:
            await self._send(routing_key, message)
        except Exception as exc:  # noqa: BLE001 - a late reply lost is a fault like any other
            _log.warning("late reply not sent", saga_id=message.correlation_id, error=str(exc))
        else:
            self.delayed += 1

    async def close(self) -> None:
        for task in list(self._held):
            task.cancel()
        await asyncio.gather(*self._held, return_exceptions=True)
        await self._broker.close()
