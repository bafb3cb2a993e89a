"""RabbitMQ's side of the wire protocol: queue arguments, delay buckets, declaration, headers.

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
import errno
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Literal, TypeGuard

import aio_pika
import aiormq.abc
import aiormq.exceptions
from pamqp.commands import Basic

from participants_sdk import protocol as p
from participants_sdk._rabbit_frames import unreadable
from participants_sdk.errors import AccessRefused, BrokerError, BrokerUnreachable, TopologyError
from participants_sdk.memory import DELIVERY_LIMIT_REASON
from participants_sdk.redaction import redact

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

PERSISTENT: Final = 2
"""AMQP delivery mode 2: the broker keeps the message on disk."""

# Where a retried message was first published: a delay queue sends it back through the default
# exchange, and the consumer restores these as the message's exchange and routing key.
H_DELAYED_EXCHANGE: Final = "x-sagawire-delayed-exchange"
H_DELAYED_ROUTING_KEY: Final = "x-sagawire-delayed-routing-key"

# Headers the broker adds; a delivery reports them apart from the message's own headers.
BROKER_HEADERS: Final = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
_PRIVATE_HEADERS: Final = frozenset({H_DELAYED_EXCHANGE, H_DELAYED_ROUTING_KEY})

# RabbitMQ's x-death reasons, as a Sagawire dead-letter reason.
_DEATH_REASONS: Final = {
    "delivery_limit": DELIVERY_LIMIT_REASON,  # the memory broker's words for it
    "rejected": "rejected without requeue",
    "expired": "expired",
    "maxlen": "queue length limit",
}


AMQP_ERRORS: Final = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)
"""What a call on a channel raises when the channel or its connection is gone."""


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
        arguments = {**self._durability(), **self._dead_lettering(p.DEAD_LETTER_EXCHANGE, queue)}
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
    (p.COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC),
    (p.REPLIES_EXCHANGE, aio_pika.ExchangeType.DIRECT),
    (p.CONTROL_EXCHANGE, aio_pika.ExchangeType.DIRECT),
    (p.DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT),
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
        dlq = await self.queue(p.dead_letter_queue(name), self._settings.dead_letter_queue())
        await self.bind(dlq, p.DEAD_LETTER_EXCHANGE, name)
        return queue

    async def topology(self, services: Iterable[str]) -> None:
        """Everything, as the orchestrator daemon declares it."""
        for exchange, kind in EXCHANGES:
            await self.exchange(exchange, kind)
        control = await self.work_queue(p.CONTROL_QUEUE)
        await self.bind(control, p.CONTROL_EXCHANGE, p.CONTROL_ROUTING_KEY)
        for service in services:
            commands = await self.work_queue(p.command_queue(service))
            await self.bind(commands, p.COMMANDS_EXCHANGE, p.command_binding(service))
            replies = await self.work_queue(p.reply_queue(service))
            await self.bind(replies, p.REPLIES_EXCHANGE, service)

    async def service(self, service: str) -> None:
        """What a participant of `service` needs: its queues, unless they are there already.

        The daemon declares the queues of every service its machines name, so a participant
        whose RabbitMQ user has only the permissions `sagawire topology permissions` prints
        (none to declare) finds them; a participant with more may start first and declare them.
        """
        commands = p.command_queue(service)
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


def split_headers(
    raw: Mapping[str, Any], queue: str
) -> tuple[dict[str, Any], dict[str, Any], tuple[str, str] | None]:
    """The message's own headers, the broker's headers, and where a retried message came from.

    A message the broker dead-lettered (a quorum queue's delivery limit) carries `x-death`
    instead of Sagawire's dead-letter headers; read from a DLQ it gets them from `x-death`, so
    a DLQ reads the same whoever moved the message there.
    """
    own = {k: v for k, v in raw.items() if k not in BROKER_HEADERS and k not in _PRIVATE_HEADERS}
    broker = {k: v for k, v in raw.items() if k in BROKER_HEADERS}
    origin = None
    if H_DELAYED_EXCHANGE in raw and H_DELAYED_ROUTING_KEY in raw:
        origin = (_text(raw[H_DELAYED_EXCHANGE]), _text(raw[H_DELAYED_ROUTING_KEY]))
    deaths = broker.get("x-death")
    why = unreadable(own)
    if queue.endswith(".dlq") and why is not None and p.H_DEAD_LETTER_REASON not in own:
        # Its properties were lost in decoding, `x-death` with them: a consumer rejected it.
        own[p.H_DEAD_LETTER_REASON] = f"properties unreadable: {why}"
        own[p.H_DEAD_LETTER_QUEUE] = queue.removesuffix(".dlq")
    elif (
        queue.endswith(".dlq")
        and p.H_DEAD_LETTER_REASON not in own
        and isinstance(deaths, list)
        and deaths
        and isinstance(deaths[0], dict)
    ):
        death: dict[str, Any] = deaths[0]  # the most recent one comes first
        reason = _text(death.get("reason", ""))
        keys = death.get("routing-keys") or [""]
        exchange, routing_key = origin or (_text(death.get("exchange", "")), _text(keys[0]))
        own[p.H_DEAD_LETTER_REASON] = _DEATH_REASONS.get(reason, reason)
        own[p.H_DEAD_LETTER_QUEUE] = _text(death.get("queue", ""))
        own[p.H_ORIGINAL_EXCHANGE] = exchange
        own[p.H_ORIGINAL_ROUTING_KEY] = routing_key
    return own, broker, origin


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def unreachable(redacted_url: str, exc: BaseException) -> BrokerUnreachable:
    return BrokerUnreachable(
        f"cannot connect to RabbitMQ at {redacted_url}: {_describe_failure(exc)}; "
        "is it running? see `make services`"
    )


def _describe_failure(exc: BaseException) -> str:
    """A short reason for a failed connection, with any URL in it redacted."""
    if _refused(exc):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(
        exc,
        aiormq.exceptions.AuthenticationError | aiormq.exceptions.ProbableAuthenticationError,
    ):
        return "login refused (check the user, password and virtual host)"
    text = redact(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _refused(exc: BaseException | None) -> bool:
    """aiormq reports a refused connection as an AMQPConnectionError carrying the errno."""
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError) or (
            exc.args and exc.args[0] == errno.ECONNREFUSED
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def refused(action: str, exc: BaseException) -> AccessRefused:
    """An `AccessRefused` for a channel call the broker refused for lack of permission."""
    return AccessRefused(
        f"this RabbitMQ user may not {action}: {redact(str(exc))}; "
        "see `sagawire topology permissions`"
    )


def broker_error(action: str, exc: BaseException) -> BrokerError:
    """A `BrokerError` for a failed channel call, with the AMQP reason when there is one."""
    reason = redact(str(exc)) or type(exc).__name__
    return BrokerError(f"{action}: {reason}")


async def close_quietly(channel: aio_pika.abc.AbstractChannel) -> None:
    if not channel.is_closed:
        with contextlib.suppress(*AMQP_ERRORS):
            await channel.close()


async def publish(
    channel: aiormq.abc.AbstractChannel, exchange: str, routing_key: str, message: p.WireMessage
) -> None:
    """Publish persistent and mandatory on `channel`; with confirms, return once confirmed.

    Straight on aiormq's channel: aio-pika's `Message` would be built for each publish only to
    be turned into these properties.
    """
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    await channel.basic_publish(
        message.body,
        exchange=exchange,
        routing_key=routing_key,
        properties=amqp_properties(message),
        mandatory=True,
    )


def amqp_properties(message: p.WireMessage) -> Basic.Properties:
    """The AMQP properties `publish` sends for `message` (encoded only when sent)."""
    return Basic.Properties(
        headers=message.headers,
        content_type=message.content_type or None,
        content_encoding=message.content_encoding or None,
        delivery_mode=PERSISTENT,
        message_id=message.message_id or None,
        correlation_id=message.correlation_id,
        message_type=message.type or None,
    )


def from_amqp(
    properties: Basic.Properties,
    body: bytes,
    *,
    exchange: str | None,
    routing_key: str | None,
    queue: str,
) -> tuple[p.WireMessage, dict[str, Any]]:
    """A message delivered from `queue` as Sagawire sees it, and the headers the broker added.

    `exchange` and `routing_key` are the delivery's: where a retried or dead-lettered message
    was first sent is read from its headers instead.
    """
    headers, broker_headers, origin = split_headers(dict(properties.headers or {}), queue)
    exchange, routing_key = origin or (exchange or "", routing_key or "")
    message = p.WireMessage(
        message_id=properties.message_id or "",
        type=properties.message_type or "",
        body=body,
        correlation_id=properties.correlation_id,
        headers=headers,
        content_type=properties.content_type or "",
        content_encoding=properties.content_encoding or "",
        exchange=exchange,
        routing_key=routing_key,
    )
    return message, broker_headers
