"""The `Broker` port on RabbitMQ, through aio-pika.

    broker = await RabbitBroker.connect("amqp://guest:guest@localhost:5672/")
    await broker.declare_topology(["payment"])
    ...
    await broker.close()

- One robust connection. The first connect fails fast with `BrokerUnreachable`; after that a lost
  connection is re-established in the background, channels are reopened and consumers restored.
  Deliveries taken before the loss are redelivered by the broker; settling one of them is logged
  and dropped. A publish while the connection is down waits for it up to `publish_timeout`; one
  in flight when it drops raises `BrokerError` (unconfirmed: the caller publishes it again).
- Publishes share one channel with publisher confirms and `mandatory`: `publish` returns once the
  broker confirmed, raises `Unroutable` when no queue is bound for the key. Concurrent publishes
  are pipelined on the channel (no lock): none waits for another's confirm.
- Each `consume` has its own channel with `basic.qos(prefetch)`. Every delivery runs its handler in
  a task of its own, tracked so that `Subscription.cancel` and `close` can wait for it.
- `dead_letter` and `retry_later` publish a copy (confirmed) before acking the original; if the
  copy is not confirmed, the original is requeued instead, so nothing is lost.

Queue arguments, delay buckets and the headers the broker adds: see `_rabbit_topology`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

import aio_pika
import aiormq.exceptions
import structlog

from participants_sdk import _rabbit_topology as t
from participants_sdk import protocol as p
from participants_sdk._consuming import run_handler
from participants_sdk._rabbit_topology import (
    QUEUE_TYPES,
    RETRY_BUCKETS_MS,
    QueueType,
    redact_url,
    retry_bucket_ms,
)
from participants_sdk.errors import (
    AlreadySettledError,
    BrokerClosed,
    BrokerError,
    TopologyError,
    Unroutable,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from aio_pika.abc import (
        AbstractExchange,
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustChannel,
        AbstractRobustConnection,
    )

    from participants_sdk.transport import DeliveryHandler

__all__ = ["RETRY_BUCKETS_MS", "QueueType", "RabbitBroker", "RabbitDelivery", "RabbitSubscription"]

DEFAULT_EXCHANGE: Final = ""

_log = structlog.get_logger(__name__)


class RabbitDelivery:
    """One delivery from a RabbitMQ queue; settle it exactly once."""

    def __init__(self, broker: RabbitBroker, incoming: AbstractIncomingMessage, queue: str) -> None:
        self._broker = broker
        self._incoming = incoming
        self._queue = queue
        self._message, self.broker_headers = t.from_amqp(incoming, queue)
        """What RabbitMQ added (`x-death`, `x-delivery-count`): not part of `message.headers`."""
        self.settled_by: str | None = None

    @property
    def message(self) -> p.WireMessage:
        return self._message

    @property
    def queue(self) -> str:
        return self._queue

    @property
    def redelivered(self) -> bool:
        return bool(self._incoming.redelivered)

    @property
    def delivery_count(self) -> int | None:
        """Earlier deliveries that came back: a quorum queue's `x-delivery-count`.

        None when unknown: a classic queue counts nothing, it only flags `redelivered`.
        """
        count = self.broker_headers.get("x-delivery-count")
        if isinstance(count, int) and not isinstance(count, bool):
            return count
        return None if self.redelivered else 0

    @property
    def channel_open(self) -> bool:
        try:
            return not self._incoming.channel.is_closed
        except aiormq.exceptions.ChannelInvalidStateError:
            return False

    @property
    def pending(self) -> bool:
        """Not settled yet, on a live channel."""
        return self.settled_by is None and self.channel_open

    async def ack(self) -> None:
        if self._begin("ack"):
            await self._send("ack", self._incoming.ack)

    async def requeue(self) -> None:
        if self._begin("requeue"):
            await self._send("requeue", self._incoming.nack)

    async def dead_letter(self, reason: str) -> None:
        if not self._begin("dead_letter"):
            return
        message = self._message
        letter = message.with_headers(
            **{
                p.H_DEAD_LETTER_REASON: reason,
                p.H_DEAD_LETTER_QUEUE: self._queue,
                p.H_ORIGINAL_EXCHANGE: message.exchange,
                p.H_ORIGINAL_ROUTING_KEY: message.routing_key,
            }
        )
        if await self._move(
            "dead_letter", self._broker.publish(p.DEAD_LETTER_EXCHANGE, self._queue, letter)
        ):
            _log.warning(
                "message dead-lettered",
                queue=self._queue,
                message_id=message.message_id,
                reason=reason,
            )

    async def retry_later(self, delay: float, headers: dict[str, object]) -> None:
        if self._begin("retry_later"):
            again = self._message.with_headers(**headers)
            await self._move("retry_later", self._broker.publish_later(self._queue, again, delay))

    def _begin(self, how: str) -> bool:
        """Mark the delivery settled; False when its channel is gone (the broker redelivers)."""
        if self.settled_by is not None:
            raise AlreadySettledError(
                f"cannot {how} message {self._message.message_id} from {self._queue}: "
                f"it was settled already by {self.settled_by}"
            )
        self.settled_by = how
        if self.channel_open:
            return True
        self._dropped(how, None)
        return False

    async def _move(self, how: str, copy: Awaitable[None]) -> bool:
        """Publish a copy elsewhere, then ack; requeue instead when the copy is not confirmed."""
        try:
            await copy
        except BrokerError as exc:
            await self._send("requeue", self._incoming.nack)
            _log.error(
                "copy not confirmed; the message was requeued instead",
                queue=self._queue,
                message_id=self._message.message_id,
                settle=how,
                error=str(exc),
            )
            return False
        await self._send("ack", self._incoming.ack)
        return True

    async def _send(self, how: str, settle: Callable[[], Awaitable[None]]) -> None:
        try:
            await settle()
        except t.AMQP_ERRORS as exc:
            self._dropped(how, exc)

    def _dropped(self, how: str, exc: BaseException | None) -> None:
        _log.warning(
            "settle on a closed channel dropped; the broker redelivers the message",
            queue=self._queue,
            message_id=self._message.message_id,
            settle=how,
            error=None if exc is None else (str(exc) or type(exc).__name__),
        )


class RabbitSubscription:
    """A consumer on its own channel; its handler tasks are tracked until they finish."""

    def __init__(
        self,
        broker: RabbitBroker,
        channel: AbstractRobustChannel,
        queue: AbstractQueue,
        handler: DeliveryHandler,
    ) -> None:
        self._broker = broker
        self._channel = channel
        self._queue = queue
        self._handler = handler
        self._tag: str | None = None
        self._cancelled = False
        self._closing: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def queue(self) -> str:
        return self._queue.name

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._on_message)

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        # Runs in a task of aiormq's that a closing channel cancels: the handler gets its own.
        try:
            delivery = RabbitDelivery(self._broker, incoming, self.queue)
        except Exception:  # noqa: BLE001 - unreadable properties: the broker dead-letters it
            with contextlib.suppress(*t.AMQP_ERRORS):
                await incoming.reject(requeue=False)
            _log.exception("unreadable delivery rejected to the DLQ", queue=self.queue)
            return
        if self._cancelled:  # handed over just before the cancel reached the broker
            await delivery.requeue()
            return
        task = asyncio.get_running_loop().create_task(
            run_handler(self._handler, delivery), name=f"{self.queue}#{incoming.delivery_tag}"
        )
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self._cancelled and not self.tasks and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(t.close_quietly(self._channel))

    async def cancel(self) -> None:
        """Stop new deliveries; the channel closes once the handlers in flight have settled."""
        if self._cancelled:
            return
        self._cancelled = True
        if self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except t.AMQP_ERRORS as exc:  # a dead channel delivers nothing more anyway
                _log.debug("consumer cancel failed", queue=self.queue, error=str(exc))
        if not self.tasks:
            await t.close_quietly(self._channel)

    async def close_channel(self) -> None:
        """Close the channel (after `cancel`, once idle): the broker takes back what is unacked."""
        if self._closing is not None:
            await self._closing
        await t.close_quietly(self._channel)


class RabbitBroker:
    """The `Broker` port on one robust aio-pika connection. Create it with `connect()`."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        publisher: AbstractRobustChannel,
        *,
        url: str,
        settings: t.QueueSettings,
        publish_timeout: float,
        close_timeout: float,
    ) -> None:
        self._connection = connection
        self._publisher = publisher
        self.url = url
        """The broker's URL, password redacted."""
        self.settings = settings
        self._publish_timeout = publish_timeout
        self._close_timeout = close_timeout
        self._exchanges: dict[str, AbstractExchange] = {}
        self._subscriptions: list[RabbitSubscription] = []
        self._delay_queues = t.DelayQueues(self._declaring)
        self._closing = False
        self._closed = False

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
        if not t.is_queue_type(queue_type):
            raise ValueError(f"queue_type must be one of {QUEUE_TYPES}, got {queue_type!r}")
        if delivery_limit < 0:
            raise ValueError(f"delivery_limit must be >= 0, got {delivery_limit}")
        redacted = redact_url(url)
        try:
            connection = await aio_pika.connect_robust(
                url,
                timeout=connect_timeout,
                client_properties={"connection_name": name},
                reconnect_interval=reconnect_interval,
            )
        except (OSError, aiormq.exceptions.AMQPError, ValueError) as exc:
            raise t.unreachable(redacted, exc) from None
        try:
            publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except BaseException:
            await connection.close()
            raise
        _log.info("connected to RabbitMQ", url=redacted, connection_name=name)
        return cls(
            connection,
            publisher,
            url=redacted,
            settings=t.QueueSettings(queue_type, delivery_limit),
            publish_timeout=publish_timeout,
            close_timeout=close_timeout,
        )

    def _check_open(self, *, draining_ok: bool = False) -> None:
        if self._closed or (self._closing and not draining_ok):
            raise BrokerClosed(f"the RabbitMQ broker connection to {self.url} is closed")

    def _declaring(self) -> contextlib.AbstractAsyncContextManager[t.Declarer]:
        return t.Declarer.on_new_channel(self._connection, self.settings)

    async def declare_topology(self, services: Iterable[str]) -> None:
        self._check_open()
        async with self._declaring() as declarer:
            await declarer.topology(services)

    async def declare_queue(self, name: str) -> None:
        """Declare one work queue with its DLQ, as `declare_topology` does, bound to nothing."""
        self._check_open()
        async with self._declaring() as declarer:
            await declarer.work_queue(name)

    @property
    def delay_queues(self) -> frozenset[str]:
        """The delay queues this connection declared for `publish_later` so far."""
        return self._delay_queues.names

    async def publish(self, exchange: str, routing_key: str, message: p.WireMessage) -> None:
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
        except aiormq.exceptions.DeliveryError as exc:
            raise BrokerError(f"{what} was refused by the broker (nack): {exc}") from None
        except TimeoutError:
            raise BrokerError(f"{what} not confirmed within {self._publish_timeout}s") from None
        except t.AMQP_ERRORS as exc:
            raise t.broker_error(f"{what} not confirmed", exc) from None

    async def _publish_once_open(
        self, exchange: str, routing_key: str, message: p.WireMessage
    ) -> None:
        """Publish, waiting for the channel to be reopened (after a reconnect or a channel error).

        A publish that found the channel closed sent nothing: trying again cannot duplicate it.
        """
        amqp = t.to_amqp(message)
        target = await self._exchange(exchange)
        while True:
            await self._publisher.ready()  # at once, unless reconnecting
            try:
                await target.publish(amqp, routing_key, mandatory=True)
            except aiormq.exceptions.ChannelInvalidStateError:
                if self._closed:
                    raise
                await asyncio.sleep(0.05)  # closed, and its reopening not begun yet
            else:
                return

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == DEFAULT_EXCHANGE:
            return self._publisher.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._publisher.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish_later(self, queue: str, message: p.WireMessage, delay: float) -> None:
        """Deliver `message` to `queue` after `delay` seconds, rounded up to a delay bucket."""
        message = message.with_headers(
            **{t.H_DELAYED_EXCHANGE: message.exchange, t.H_DELAYED_ROUTING_KEY: message.routing_key}
        )
        if delay <= 0:
            await self.publish(DEFAULT_EXCHANGE, queue, message)
            return
        bucket = retry_bucket_ms(delay)
        if delay * 1000 > bucket:
            _log.warning("retry delay cut to the longest bucket", delay=delay, bucket_ms=bucket)
        delay_queue = await self._delay_queues.declared(queue, bucket)
        try:
            await self.publish(DEFAULT_EXCHANGE, delay_queue, message)
        except Unroutable:  # deleted since we declared it: declare it again, once
            self._delay_queues.forget(delay_queue)
            delay_queue = await self._delay_queues.declared(queue, bucket)
            await self.publish(DEFAULT_EXCHANGE, delay_queue, message)

    async def consume(
        self, queue: str, handler: DeliveryHandler, *, prefetch: int = 64
    ) -> RabbitSubscription:
        self._check_open()
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=prefetch)
            subscription = RabbitSubscription(
                self, channel, await channel.get_queue(queue, ensure=True), handler
            )
            await subscription.start()
        except aiormq.exceptions.ChannelNotFoundEntity:
            await t.close_quietly(channel)
            raise TopologyError(
                f"queue {queue!r} is not declared; declare the topology first"
            ) from None
        except t.AMQP_ERRORS as exc:
            await t.close_quietly(channel)
            raise t.broker_error(f"cannot consume from {queue!r}", exc) from None
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
        await t.close_quietly(self._publisher)
        with contextlib.suppress(*t.AMQP_ERRORS):
            await self._connection.close()
        _log.info("disconnected from RabbitMQ", url=self.url)

    async def abort(self) -> None:
        """Drop the connection at once, as a process that dies would: no handler in flight is
        waited for or settles afterwards; the broker takes back every unacked delivery."""
        if self._closed:
            return
        self._closing = self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, []
        with contextlib.suppress(*t.AMQP_ERRORS):
            await self._connection.close()
        late = [task for s in subscriptions for task in s.tasks]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        _log.info("connection to RabbitMQ aborted", url=self.url, handlers_cancelled=len(late))
