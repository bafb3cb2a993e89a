"""The `Broker` port on RabbitMQ, through aio-pika.

    broker = await RabbitBroker.connect("amqp://guest:guest@localhost:5672/")
    await broker.declare_topology(["payment"])
    ...
    await broker.close()

- One connection. The first connect fails fast with `BrokerUnreachable`. After that a lost
  connection is replaced in the background: a new connection and publisher channel, every
  consumer attached again on a channel of its own, each step bounded by `connect_timeout`, tried
  every `reconnect_interval` until the broker answers (`_rabbit_link` says why not aio-pika's
  robust connection). A consumer whose channel alone closed is attached again the same way.
  Deliveries taken before the loss are redelivered by the broker; settling one of them is logged
  and dropped. A publish while the connection is down waits for it up to `publish_timeout`; one
  in flight when it drops raises `BrokerError` (unconfirmed: the caller publishes it again).
- Publishes share one channel with publisher confirms and `mandatory`: `publish` returns once the
  broker confirmed, raises `Unroutable` when no queue is bound for the key. Concurrent publishes
  are pipelined on the channel (no lock): none waits for another's confirm.
- Each `consume` has its own channel with `basic.qos(prefetch)`. Every delivery runs its handler in
  a task of its own, tracked so that `Subscription.cancel` and `close` can wait for it.
- Acks of a channel go out in batches (`_rabbit_acks`): a batch waits up to 5 ms for more, or
  none once it holds half the prefetch, and becomes one multiple ack up to the oldest delivery
  still in hand. `ack()` returns once its batch is written.
- `dead_letter` and `retry_later` publish a copy (confirmed) before acking the original; if the
  copy is not confirmed, the original is requeued instead, so nothing is lost.

Queue arguments, delay buckets and the headers the broker adds: see `_rabbit_queues`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aiormq.exceptions
import structlog

from participants_sdk import _rabbit_queues as queues
from participants_sdk import amqp, protocol
from participants_sdk._rabbit_consumers import RabbitSubscription
from participants_sdk._rabbit_delivery import RabbitDelivery
from participants_sdk._rabbit_link import Link
from participants_sdk._rabbit_queues import (
    QUEUE_TYPES,
    RETRY_BUCKETS_MS,
    QueueType,
    delay_queue,
    retry_bucket_ms,
    retry_exchange,
)
from participants_sdk._rabbit_reconnect import Reconnector, cancelled_from_outside
from participants_sdk.errors import (
    BrokerClosed,
    BrokerError,
    NotConfirmed,
    TopologyError,
    Unroutable,
)
from participants_sdk.redaction import redact

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from participants_sdk.transport import DeliveryHandler

__all__ = [
    "RETRY_BUCKETS_MS",
    "QueueType",
    "RabbitBroker",
    "RabbitDelivery",
    "RabbitSubscription",
    "delay_queue",
    "retry_exchange",
]

_log = structlog.get_logger(__name__)


class RabbitBroker:
    """The `Broker` port on one RabbitMQ connection, kept open. Create it with `connect()`."""

    def __init__(
        self,
        link: Link,
        *,
        connect_url: str,
        name: str,
        settings: queues.QueueSettings,
        publish_timeout: float,
        close_timeout: float,
        connect_timeout: float,
        reconnect_interval: float,
    ) -> None:
        self._link = link
        self.url = redact(connect_url)
        """The broker's URL, password redacted."""
        self.settings = settings
        self._publish_timeout = publish_timeout
        self._close_timeout = close_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_interval = reconnect_interval
        self._reconnector = Reconnector(
            redacted_url=self.url,
            name=name,
            connect_timeout=connect_timeout,
            close_timeout=close_timeout,
            interval=reconnect_interval,
            url=connect_url,
        )
        self._subscriptions: list[RabbitSubscription] = []
        self._delay_queues = queues.DelayQueues(self._declaring)
        self._up = asyncio.Event()
        self._up.set()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = False
        self.reconnects = 0
        """Connections opened again after one was lost."""
        self.consumers_lost = 0
        """Times a consumer's channel closed, or the broker cancelled it, while it consumed."""
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep_connected(), name=f"{name}: keep connected"
        )

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        queue_type: QueueType | str = "quorum",
        delivery_limit: int = 20,
        name: str = "sagawire",
        connect_timeout: float = 5.0,
        publish_timeout: float = 30.0,
        close_timeout: float = 10.0,
        reconnect_interval: float = 5.0,
    ) -> RabbitBroker:
        """Connect, failing fast with `BrokerUnreachable` if the broker cannot be reached now.

        `delivery_limit` applies to quorum queues only: classic queues have no delivery limit.
        `queue_type` is checked at run time too, since it often comes from a command line.
        """
        if not queues.is_queue_type(queue_type):
            raise ValueError(f"queue_type must be one of {QUEUE_TYPES}, got {queue_type!r}")
        if delivery_limit < 0:
            raise ValueError(f"delivery_limit must be >= 0, got {delivery_limit}")
        redacted = redact(url)
        try:
            link = await Link.open(url, name=name, timeout=connect_timeout)
        except (OSError, aiormq.exceptions.AMQPError, ValueError, TimeoutError) as exc:
            raise amqp.unreachable(redacted, exc) from None
        _log.info("connected to RabbitMQ", url=redacted, connection_name=name)
        return cls(
            link,
            connect_url=url,
            name=name,
            settings=queues.QueueSettings(queue_type, delivery_limit),
            publish_timeout=publish_timeout,
            close_timeout=close_timeout,
            connect_timeout=connect_timeout,
            reconnect_interval=reconnect_interval,
        )

    # -- keeping connected ----------------------------------------------------------------

    async def _keep_connected(self) -> None:
        while not self._closing:
            await self._link.lost.wait()
            if self._closing:
                return
            try:
                await self._replace_link()
            except (Exception, asyncio.CancelledError):  # this task outlives a bug in one round
                if cancelled_from_outside():
                    raise
                with contextlib.suppress(Exception):  # even a log line that cannot be written
                    _log.exception("keeping the RabbitMQ connection failed; trying again")
                await asyncio.sleep(self._reconnect_interval)

    async def _replace_link(self) -> None:
        loop = asyncio.get_running_loop()
        self._up.clear()
        lost_at = loop.time()
        _log.warning("connection to RabbitMQ lost; reconnecting", url=self.url)
        link = await self._reconnector.new_link(
            lambda: list(self._subscriptions), lambda: self._closing
        )
        if link is None:
            return
        old, self._link = self._link, link
        self.reconnects += 1
        self._up.set()
        _log.info(
            "reconnected to RabbitMQ",
            url=self.url,
            after_s=round(loop.time() - lost_at, 2),
            consumers=len(self._subscriptions),
        )
        await old.close(self._close_timeout)

    def _subscription_lost(self, subscription: RabbitSubscription) -> None:
        """A consumer's channel closed: attach it again, unless the connection went with it."""
        if self._closing:
            return
        self.consumers_lost += 1
        task = asyncio.get_running_loop().create_task(
            self._reconnector.reattach(subscription, lambda: self._link, lambda: self._closing)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _wait_connected(self, what: str) -> Link:
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._up.wait()
        except TimeoutError:
            raise BrokerError(
                f"{what}: not connected to RabbitMQ at {self.url} for {self._publish_timeout}s"
            ) from None
        return self._link

    # -- the Broker port ------------------------------------------------------------------

    def _check_open(self, *, draining_ok: bool = False) -> None:
        if self._closed or (self._closing and not draining_ok):
            raise BrokerClosed(f"the RabbitMQ broker connection to {self.url} is closed")

    @contextlib.asynccontextmanager
    async def _declaring(self) -> AsyncIterator[queues.Declarer]:
        link = await self._wait_connected("declaring the topology")
        async with queues.Declarer.on_new_channel(link.connection, self.settings) as declarer:
            yield declarer

    async def declare_topology(self, services: Iterable[str]) -> None:
        self._check_open()
        async with self._declaring() as declarer:
            await declarer.topology(services)

    async def declare_service(self, service: str) -> None:
        """Declare what a participant of `service` needs (see `Declarer.service`)."""
        self._check_open()
        async with self._declaring() as declarer:
            await declarer.service(service)

    async def declare_queue(self, name: str) -> None:
        """Declare one work queue with its DLQ, as `declare_topology` does, bound to nothing."""
        self._check_open()
        async with self._declaring() as declarer:
            await declarer.work_queue(name)

    @property
    def delay_queues(self) -> frozenset[str]:
        """The delay queues this connection declared for `publish_later` so far."""
        return self._delay_queues.names

    async def publish(self, exchange: str, routing_key: str, message: protocol.WireMessage) -> None:
        """Publish persistent and mandatory; return once confirmed (see the module docstring)."""
        self._check_open(draining_ok=True)
        what = f"message {message.message_id} to exchange {exchange!r} key {routing_key!r}"
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._publish_once_open(exchange, routing_key, message)
        except aiormq.exceptions.PublishError:
            raise Unroutable(
                f"{what} was returned: no queue is bound for that key on that exchange; "
                "declare the topology first (or check the key)"
            ) from None
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise TopologyError(f"{what} failed: {exc}; declare the topology first") from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise amqp.refused(f"publish {what}", exc) from None
        except aiormq.exceptions.DeliveryError as exc:
            raise NotConfirmed(f"{what} was refused by the broker (nack): {exc}") from None
        except TimeoutError:
            raise NotConfirmed(f"{what} not confirmed within {self._publish_timeout}s") from None
        except amqp.AMQP_ERRORS as exc:
            reason = redact(str(exc)) or type(exc).__name__
            raise NotConfirmed(f"{what} not confirmed: {reason}") from None

    async def _publish_once_open(
        self, exchange: str, routing_key: str, message: protocol.WireMessage
    ) -> None:
        """Publish, waiting for the connection (after a loss) or the channel (after an error).

        A publish that found the channel closed sent nothing: trying again cannot duplicate it.
        """
        while True:
            await self._up.wait()  # at once, unless reconnecting
            try:
                channel = await self._link.publishing_channel()
                await amqp.publish(channel, exchange, routing_key, message)
            except aiormq.exceptions.ChannelInvalidStateError:
                if self._closed:
                    raise
                await asyncio.sleep(0.05)  # closed, and the loss not told yet
            else:
                return

    async def publish_later(self, queue: str, message: protocol.WireMessage, delay: float) -> None:
        """Deliver `message` to `queue` after `delay` seconds, rounded up to a delay bucket.

        It goes through the queue's retry exchange (see `_rabbit_queues`), never the default
        exchange, so a service needs no permission to publish into queues by name.
        """
        message = message.with_headers(
            **{
                amqp.H_DELAYED_EXCHANGE: message.exchange,
                amqp.H_DELAYED_ROUTING_KEY: message.routing_key,
            }
        )
        bucket = None if delay <= 0 else retry_bucket_ms(delay)
        if bucket is not None and delay * 1000 > bucket:
            _log.warning("retry delay cut to the longest bucket", delay=delay, bucket_ms=bucket)
        key = await self._delay_queues.declared(queue, bucket)
        try:
            await self.publish(retry_exchange(queue), key, message)
        except (Unroutable, TopologyError):  # deleted since we declared it: declare it again, once
            self._delay_queues.forget(key)
            key = await self._delay_queues.declared(queue, bucket)
            await self.publish(retry_exchange(queue), key, message)

    async def consume(
        self, queue: str, handler: DeliveryHandler, *, prefetch: int = 64
    ) -> RabbitSubscription:
        self._check_open()
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        subscription = RabbitSubscription(
            self, queue, handler, prefetch=prefetch, lost=self._subscription_lost
        )
        link = await self._wait_connected(f"consuming from {queue!r}")
        try:
            await subscription.attach(link.connection)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise TopologyError(
                f"queue {queue!r} is not declared; declare the topology first"
            ) from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise amqp.refused(f"consume from {queue!r}", exc) from None
        except amqp.AMQP_ERRORS as exc:
            raise amqp.broker_error(f"cannot consume from {queue!r}", exc) from None
        self._subscriptions.append(subscription)
        return subscription

    async def close(self) -> None:
        """Cancel consumers, give handlers in flight `close_timeout` seconds, then disconnect."""
        if self._closing:
            return
        self._closing = True
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            await subscription.cancel()
        in_flight = {task for s in subscriptions for task in s.tasks}
        if in_flight:
            _, late = await asyncio.wait(in_flight, timeout=self._close_timeout)
            if late:
                _log.warning("cancelling delivery handlers after grace", count=len(late))
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        for subscription in subscriptions:
            await subscription.close_channel()
        self._closed = True
        await self._stop_keeping()
        await self._link.close(self._close_timeout)
        _log.info("disconnected from RabbitMQ", url=self.url)

    async def abort(self) -> None:
        """Drop the connection at once, as a process that dies would: no handler in flight is
        waited for or settles afterwards; the broker takes back every unacked delivery."""
        if self._closed:
            return
        self._closing = self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, []
        await self._stop_keeping()
        await self._link.close(self._close_timeout)
        late = [task for s in subscriptions for task in s.tasks]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        _log.info("connection to RabbitMQ aborted", url=self.url, handlers_cancelled=len(late))

    async def _stop_keeping(self) -> None:
        tasks = [self._keeper, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
