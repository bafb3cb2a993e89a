"""Consuming from RabbitMQ: one consumer (`RabbitSubscription`); its deliveries are settled as
`_rabbit_delivery` says.

A subscription is attached to a channel of its own, and attached again to a new one when its
channel or connection is lost. It consumes straight from aiormq's channel: aio-pika would build a
message object and start a task for each delivery, before the task of its own that each handler
needs anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog
from pamqp.commands import Basic

from participants_sdk import _rabbit_letters as letters
from participants_sdk import amqp
from participants_sdk._consuming import run_handler
from participants_sdk._rabbit_acks import ChannelAcks
from participants_sdk._rabbit_delivery import Publisher, RabbitDelivery, delivery_tag
from participants_sdk.errors import (
    BrokerError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from aio_pika.abc import AbstractChannel, AbstractConnection
    from aiormq.abc import DeliveredMessage

    from participants_sdk.transport import DeliveryHandler

_log = structlog.get_logger("participants_sdk.rabbitmq")


class RabbitSubscription:
    """A consumer on a channel of its own; its handler tasks are tracked until they finish.

    `lost` is called when its channel closes while it still consumes (a channel error, the
    broker cancelled it, the connection dropped): the broker then attaches it again.
    """

    def __init__(
        self,
        broker: Publisher,
        queue: str,
        handler: DeliveryHandler,
        *,
        prefetch: int,
        lost: Callable[[RabbitSubscription], None],
    ) -> None:
        self._broker = broker
        self._queue_name = queue
        self._handler = handler
        self._prefetch = prefetch
        self._lost = lost
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._tag: str | None = None
        self._consuming = False
        self._attaching = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()
        self._cancelled = False
        self._closing: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def queue(self) -> str:
        return self._queue_name

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def attached_to(self, connection: AbstractConnection) -> bool:
        """Consuming on an open channel of `connection`."""
        channel = self._channel
        return (
            self._consuming
            and self._connection is connection
            and channel is not None
            and not channel.is_closed
        )

    async def attach(self, connection: AbstractConnection) -> None:
        """Consume on a new channel of `connection`, unless it does already."""
        async with self._attaching:
            if self._cancelled or self.attached_to(connection):
                return
            channel = await connection.channel(publisher_confirms=False)
            try:
                await channel.set_qos(prefetch_count=self._prefetch)
                await channel.get_queue(self._queue_name, ensure=True)  # missing: an error
                underlay = await channel.get_underlay_channel()
                acks = ChannelAcks(underlay, prefetch=self._prefetch)

                async def on_message(delivered: DeliveredMessage) -> None:
                    await self._on_message(delivered, acks)

                consuming = await underlay.basic_consume(self._queue_name, on_message)
            except BaseException:
                await amqp.close_quietly(channel)
                raise
            old, self._connection, self._channel = self._channel, connection, channel
            self._tag, self._consuming = consuming.consumer_tag, True
            if old is not None and not old.is_closed:  # its consumer was cancelled by the broker
                self._retire(old)
            underlay.on_consumer_cancel_callbacks.add(self._on_broker_cancel)
            channel.close_callbacks.add(self._on_channel_closed)

    def _on_channel_closed(self, sender: object, *_: object) -> None:
        if sender is self._channel and not self._cancelled:
            self._lost(self)

    def _on_broker_cancel(self, frame: Basic.Cancel) -> None:
        # The queue was deleted, or its node went away: a new channel consumes it again. (This
        # runs in the channel's reader: closing the channel here would wait for itself.)
        if frame.consumer_tag == self._tag and not self._cancelled:
            _log.warning("consumer cancelled by the broker", queue=self.queue)
            self._consuming = False
            self._lost(self)

    def _retire(self, channel: AbstractChannel) -> None:
        task = asyncio.get_running_loop().create_task(amqp.close_quietly(channel))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _on_message(self, delivered: DeliveredMessage, acks: ChannelAcks) -> None:
        # Runs in a task of aiormq's that a closing channel cancels: the handler gets its own.
        deliver = delivered.delivery
        if not isinstance(deliver, Basic.Deliver):  # aiormq hands consumers nothing else
            raise BrokerError(f"unexpected {type(deliver).__name__} from {self.queue!r}")
        tag = delivery_tag(deliver)
        acks.received(tag)
        try:
            delivery = RabbitDelivery(self._broker, delivered, deliver, self.queue, acks)
        except Exception as exc:  # noqa: BLE001 - unreadable properties: the broker dead-letters it
            with contextlib.suppress(*amqp.AMQP_ERRORS):
                try:
                    await delivered.channel.basic_reject(tag, requeue=False)
                finally:
                    acks.settled_otherwise(tag)
            _log.warning(
                "unreadable delivery rejected to the DLQ",
                queue=self.queue,
                error=letters.short(exc),
            )
            return
        why = delivery.unreadable
        if why is not None and not self.queue.endswith(".dlq"):  # a DLQ's reject would drop it
            await delivery.reject(f"properties unreadable: {why}")
            return
        if self._cancelled:  # handed over just before the cancel reached the broker
            await delivery.requeue()
            return
        task = asyncio.get_running_loop().create_task(
            run_handler(self._handler, delivery), name=f"{self.queue}#{tag}"
        )
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self._cancelled and not self.tasks and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close_channel())

    async def _close_channel(self) -> None:
        if self._channel is not None:
            await amqp.close_quietly(self._channel)

    async def cancel(self) -> None:
        """Stop new deliveries; the channel closes once the handlers in flight have settled."""
        if self._cancelled:
            return
        self._cancelled = True
        if self._channel is not None and self._tag is not None:
            try:
                await (await self._channel.get_underlay_channel()).basic_cancel(self._tag)
            except amqp.AMQP_ERRORS as exc:  # a dead channel delivers nothing more anyway
                _log.debug("consumer cancel failed", queue=self.queue, error=str(exc))
        if not self.tasks:
            await self._close_channel()

    async def close_channel(self) -> None:
        """Close the channel (after `cancel`, once idle): the broker takes back what is unacked."""
        if self._closing is not None:
            await self._closing
        await self._close_channel()
