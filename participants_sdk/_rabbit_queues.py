"""The queues of the wire protocol on RabbitMQ: their arguments, delay buckets, declaring them.

Private to `participants_sdk.rabbitmq`. Every queue Sagawire declares is durable and dead-letters
to `sagawire.dlx` with its own name as routing key, into a durable `<queue>.dlq`.

Quorum queues (the default) get::

    x-queue-type: quorum
    x-delivery-limit: <delivery_limit>         a poison message is dead-lettered, not looped
    x-dead-letter-exchange: sagawire.dlx
    x-dead-letter-routing-key: <queue>
    x-dead-letter-strategy: at-least-once      a dead letter is confirmed by its DLQ, never lost
    x-overflow: reject-publish                 required by at-least-once dead-lettering

Classic queues (`queue_type="classic"`) get only the two dead-letter arguments: a classic queue
has no delivery limit (a message requeued forever loops forever) and dead-letters at most once.

Retries wait in delay queues `<queue>.delay.<ms>`, one per delay bucket, so a short delay never
waits behind a long one: `x-message-ttl: <ms>`, dead-lettering back to the queue through its
retry exchange `<queue>.retry` (direct; at-least-once on quorum queues). The retry exchange
routes key `<queue>.delay.<ms>` to that delay queue and key `<queue>` to the queue itself, and
nothing else: a service allowed to publish to its own retry exchange reaches its own queues only,
which the default exchange (any queue by name) would not. Declared on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Literal, TypeGuard

import aio_pika
import aiormq.exceptions

from participants_sdk import protocol
from participants_sdk.amqp import AMQP_ERRORS, broker_error, close_quietly, refused
from participants_sdk.errors import AccessRefused, TopologyError

QueueType = Literal["quorum", "classic"]
QUEUE_TYPES: Final = ("quorum", "classic")

RETRY_BUCKETS_MS: Final = (
    100,
    250,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
    900_000,
    3_600_000,
)


def is_queue_type(value: str) -> TypeGuard[QueueType]:
    return value in QUEUE_TYPES


def retry_bucket_ms(delay: float) -> int:
    """The smallest bucket that is at least `delay` seconds; the largest one past that."""
    wanted = math.ceil(delay * 1000)
    return next((ms for ms in RETRY_BUCKETS_MS if ms >= wanted), RETRY_BUCKETS_MS[-1])


def retry_exchange(queue: str) -> str:
    """The exchange a retried message of `queue` is published to, and comes back through."""
    return f"{queue}.retry"


def delay_queue(queue: str, bucket_ms: int) -> str:
    return f"{queue}.delay.{bucket_ms}"


@dataclasses.dataclass(frozen=True, slots=True)
class QueueSettings:
    queue_type: QueueType
    delivery_limit: int

    def _durability(self) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type}

    def _dead_lettering(self, exchange: str, routing_key: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": exchange,
            "x-dead-letter-routing-key": routing_key,
        }
        if self.queue_type == "quorum":
            arguments["x-dead-letter-strategy"] = "at-least-once"
            arguments["x-overflow"] = "reject-publish"
        return arguments

    def work_queue(self, queue: str) -> dict[str, Any]:
        """A queue consumers take messages from: commands, replies, control."""
        arguments = {
            **self._durability(),
            **self._dead_lettering(protocol.DEAD_LETTER_EXCHANGE, queue),
        }
        if self.queue_type == "quorum":
            arguments["x-delivery-limit"] = self.delivery_limit
        return arguments

    def dead_letter_queue(self) -> dict[str, Any]:
        """A DLQ keeps what it holds: no dead-lettering and no limit of its own."""
        return self._durability()

    def delay_queue(self, target: str, bucket_ms: int) -> dict[str, Any]:
        return {
            **self._durability(),
            **self._dead_lettering(retry_exchange(target), target),
            "x-message-ttl": bucket_ms,
        }


EXCHANGES: Final = (
    (protocol.COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC),
    (protocol.REPLIES_EXCHANGE, aio_pika.ExchangeType.DIRECT),
    (protocol.CONTROL_EXCHANGE, aio_pika.ExchangeType.DIRECT),
    (protocol.DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT),
)


class Declarer:
    """Declares on a channel of its own; a refused declaration becomes a `TopologyError` naming
    what. A passive check that finds nothing closes the channel; the next call opens another."""

    def __init__(
        self, connection: aio_pika.abc.AbstractConnection, settings: QueueSettings
    ) -> None:
        self._connection = connection
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._settings = settings

    @classmethod
    @contextlib.asynccontextmanager
    async def on_new_channel(
        cls, connection: aio_pika.abc.AbstractConnection, settings: QueueSettings
    ) -> AsyncIterator[Declarer]:
        declarer = cls(connection, settings)
        try:
            yield declarer
        except AMQP_ERRORS as exc:
            raise broker_error("declaring the topology failed", exc) from None
        finally:
            if declarer._channel is not None:
                await close_quietly(declarer._channel)

    async def _open(self) -> aio_pika.abc.AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
        return self._channel

    async def exchange(self, name: str, kind: aio_pika.ExchangeType) -> None:
        channel = await self._open()
        try:
            await channel.declare_exchange(name, kind, durable=True)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise TopologyError(
                f"exchange {name!r} exists with another type or arguments than Sagawire "
                f"declares ({kind.value}, durable): {exc}; delete it or change it to match"
            ) from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise refused(f"declare exchange {name!r}", exc) from None

    async def queue(self, name: str, arguments: Mapping[str, Any]) -> aio_pika.abc.AbstractQueue:
        channel = await self._open()
        try:
            return await channel.declare_queue(name, durable=True, arguments=dict(arguments))
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise TopologyError(
                f"queue {name!r} exists with other arguments than this broker declares "
                f"({_describe(arguments)}): {exc}; delete the queue (move its messages first) "
                "or connect with the queue type and delivery limit it was declared with"
            ) from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise refused(f"declare queue {name!r}", exc) from None

    async def exists(self, kind: Literal["exchange", "queue"], name: str) -> bool:
        """Whether the exchange or queue is there; a passive check needs no permission."""
        channel = await self._open()
        try:
            if kind == "exchange":
                await channel.get_exchange(name, ensure=True)
            else:
                await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        return True

    async def bind(self, queue: aio_pika.abc.AbstractQueue | str, exchange: str, key: str) -> None:
        channel = await self._open()
        name = queue if isinstance(queue, str) else queue.name
        try:
            await (await channel.get_queue(name, ensure=False)).bind(exchange, key)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise refused(f"bind queue {name!r} to exchange {exchange!r}", exc) from None

    async def work_queue(self, name: str) -> aio_pika.abc.AbstractQueue:
        """The queue, its DLQ and the DLQ's binding on the dead-letter exchange."""
        queue = await self.queue(name, self._settings.work_queue(name))  # first: a clash names it
        dlq = await self.queue(protocol.dead_letter_queue(name), self._settings.dead_letter_queue())
        await self.bind(dlq, protocol.DEAD_LETTER_EXCHANGE, name)
        return queue

    async def topology(self, services: Iterable[str]) -> None:
        """The exchanges, the control queue, and the command and reply queues of `services`.

        The daemon declares this for every service its machines name; a participant, for its own.
        """
        for exchange, kind in EXCHANGES:
            await self.exchange(exchange, kind)
        control = await self.work_queue(protocol.CONTROL_QUEUE)
        await self.bind(control, protocol.CONTROL_EXCHANGE, protocol.CONTROL_ROUTING_KEY)
        for service in services:
            commands = await self.work_queue(protocol.command_queue(service))
            await self.bind(commands, protocol.COMMANDS_EXCHANGE, protocol.command_binding(service))
            replies = await self.work_queue(protocol.reply_queue(service))
            await self.bind(replies, protocol.REPLIES_EXCHANGE, service)

    async def service(self, service: str) -> None:
        """What a participant of `service` needs: its queues, unless they are there already.

        The daemon declares the queues of every service its machines name, so a participant
        whose RabbitMQ user has only the permissions `sagawire topology permissions` prints
        (none to declare) finds them; a participant with more may start first and declare them.
        """
        commands = protocol.command_queue(service)
        if await self.exists("queue", commands):
            return
        try:
            await self.topology([service])
        except AccessRefused as exc:
            raise AccessRefused(
                f"queue {commands!r} is not declared yet, and {exc}; start the orchestrator "
                "daemon first: it declares the queues of every service its machines name"
            ) from None

    async def retry_route(self, target: str) -> None:
        """The retry exchange of `target`, routing key `target` back to it."""
        await self.exchange(retry_exchange(target), aio_pika.ExchangeType.DIRECT)
        await self.bind(target, retry_exchange(target), target)

    async def delay_queue(self, target: str, bucket_ms: int) -> str:
        name = delay_queue(target, bucket_ms)
        await self.queue(name, self._settings.delay_queue(target, bucket_ms))
        await self.bind(name, retry_exchange(target), name)
        return name


class DelayQueues:
    """The retry routes and delay queues declared so far, each declared once, on first use."""

    def __init__(self, declaring: Callable[[], AbstractAsyncContextManager[Declarer]]) -> None:
        self._declaring = declaring
        self._routes: set[str] = set()
        self._delays: set[str] = set()
        self._lock = asyncio.Lock()

    async def declared(self, queue: str, bucket_ms: int | None) -> str:
        """The routing key on `retry_exchange(queue)` that delivers to `queue` after `bucket_ms`
        (at once when None), declaring the route and the delay queue first if need be."""
        if bucket_ms is None:
            name, declared = queue, self._routes
        else:
            name, declared = delay_queue(queue, bucket_ms), self._delays
        if name not in declared:
            async with self._lock:
                if name not in declared:
                    async with self._declaring() as declarer:
                        await declarer.retry_route(queue)
                        if bucket_ms is not None:
                            await declarer.delay_queue(queue, bucket_ms)
                    declared.add(name)
        return name

    @property
    def names(self) -> frozenset[str]:
        """The delay queues declared so far."""
        return frozenset(self._delays)

    def forget(self, name: str) -> None:
        self._routes.discard(name)
        self._delays.discard(name)


def _describe(arguments: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(arguments.items())) or "durable"
