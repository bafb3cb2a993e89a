"""Operators' work on the dead-letter queues: read, replay, purge.

- Reading takes each message without acking it and lets the channel's close give every one back:
  nothing is consumed, and the queue keeps its order. (A DLQ has no delivery limit, so reading
  it often loses nothing; RabbitMQ counts each read in `x-delivery-count`.)
- Replaying publishes a copy to the exchange and routing key the message was first sent to (from
  Sagawire's dead-letter headers, or the broker's `x-death`), with `x-sagawire-replay-count`
  one higher and the participant's retry count dropped (a replayed command is retried afresh),
  and acks the dead letter only once the broker confirmed the copy. A message
  already replayed `max_replays` times is held: left where it is, reported as such.
- Purging empties a queue and says how many messages went.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from participants_sdk import amqp, protocol
from participants_sdk.headers import HeaderError
from participants_sdk.redaction import redact

DEFAULT_MAX_REPLAYS = 3
_DROPPED_ON_REPLAY = (
    protocol.H_DEAD_LETTER_REASON,
    protocol.H_DEAD_LETTER_QUEUE,
    protocol.H_ORIGINAL_EXCHANGE,
    protocol.H_ORIGINAL_ROUTING_KEY,
    protocol.H_DEAD_LETTER_DROPPED_HEADERS,
    protocol.H_RETRIES,  # a replayed command gets its participant's retries afresh
)


class QueueMissing(LookupError):
    pass


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    queue: str
    """The DLQ holding it."""
    message: protocol.WireMessage
    delivery_count: int

    @property
    def message_id(self) -> str:
        return self.message.message_id

    @property
    def reason(self) -> str:
        return self.message.header_display(protocol.H_DEAD_LETTER_REASON) or "unknown"

    @property
    def from_queue(self) -> str:
        queue = self.message.header_display(protocol.H_DEAD_LETTER_QUEUE)
        return queue or self.queue.removesuffix(".dlq")

    @property
    def exchange(self) -> str:
        return self.message.header_display(protocol.H_ORIGINAL_EXCHANGE) or ""

    @property
    def routing_key(self) -> str:
        return self.message.header_display(protocol.H_ORIGINAL_ROUTING_KEY) or ""

    @property
    def replays(self) -> int:
        try:
            return self.message.header_int(protocol.H_REPLAY_COUNT) or 0
        except HeaderError:  # not one of ours: a replay starts counting again
            return 0

    def to_json(self, *, body: bool = False) -> dict[str, Any]:
        document: dict[str, Any] = {
            "queue": self.queue,
            "message_id": self.message_id,
            "type": self.message.type,
            "correlation_id": self.message.correlation_id,
            "reason": self.reason,
            "from_queue": self.from_queue,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "replays": self.replays,
        }
        if body:
            document["headers"] = {k: _plain(v) for k, v in self.message.headers.items()}
            document["content_type"] = self.message.content_type
            document["body"] = self.message.body.decode("utf-8", errors="replace")
        return document


def _plain(value: Any) -> Any:  # noqa: ANN401 - an AMQP field value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def dead_letter_queues(services: Iterable[str]) -> list[str]:
    """The DLQs of the topology for these services: control, then commands and replies."""
    queues = [protocol.dead_letter_queue(protocol.CONTROL_QUEUE)]
    for service in sorted(services):
        queues.append(protocol.dead_letter_queue(protocol.command_queue(service)))
        queues.append(protocol.dead_letter_queue(protocol.reply_queue(service)))
    return queues


async def counts(connection: AbstractConnection, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of `queue`; `QueueMissing` when it is not declared."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise QueueMissing(queue) from None
    finally:
        await amqp.close_quietly(channel)
    result = declared.declaration_result
    return int(result.message_count or 0), int(result.consumer_count or 0)


async def depth(connection: AbstractConnection, queue: str) -> int:
    """Messages ready in `queue`; `QueueMissing` when it is not declared."""
    return (await counts(connection, queue))[0]


@contextlib.asynccontextmanager
async def _holding(connection: AbstractConnection) -> AsyncIterator[_Held]:
    """A channel to take messages on; whatever it has not acked goes back, in order, at the end.

    Each one is given back alone, in delivery order: closing the channel (or one multiple nack)
    would give them back too, but a quorum queue then takes a large batch back in no particular
    order.
    """
    channel = await connection.channel(publisher_confirms=False)
    held = _Held(channel)
    try:
        yield held
    finally:
        try:
            with contextlib.suppress(*amqp.AMQP_ERRORS):
                returned = held.unsettled()
                for incoming in returned:
                    await incoming.nack(requeue=True)
                    # A round trip on the channel after each one: the broker then takes each back
                    # alone, in this order (a batch of returns comes back in no particular order).
                    await held.channel.declare_queue(held.queue, passive=True)
                if returned:
                    await _counted_back(held, len(returned))
        finally:
            await amqp.close_quietly(channel)


async def _counted_back(held: _Held, returned: int, *, within: float = 5.0) -> None:
    """Wait (a bounded time) until the queue counts the messages given back as ready again.

    A quorum queue applies a return after the channel answered, so a count or a read that
    follows at once could miss a few of them: the next `dlq list` would show fewer.
    """
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        declared = await held.channel.declare_queue(held.queue, passive=True)
        if int(declared.declaration_result.message_count or 0) >= returned:
            return
        await asyncio.sleep(0.02)


@dataclasses.dataclass
class _Held:
    channel: AbstractChannel
    queue: str = ""
    taken: list[AbstractIncomingMessage] = dataclasses.field(default_factory=list)

    def unsettled(self) -> list[AbstractIncomingMessage]:
        return [incoming for incoming in self.taken if not incoming.processed]


async def _take_all(
    held: _Held, queue: str, limit: int | None
) -> list[tuple[AbstractIncomingMessage, DeadLetter]]:
    held.queue = queue
    try:
        source = await held.channel.get_queue(queue, ensure=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise QueueMissing(queue) from None
    taken: list[tuple[AbstractIncomingMessage, DeadLetter]] = []
    while limit is None or len(taken) < limit:
        incoming = await source.get(no_ack=False, fail=False)
        if incoming is None:
            break
        held.taken.append(incoming)
        message, broker_headers = amqp.from_amqp(
            incoming.properties,
            incoming.body,
            exchange=incoming.exchange,
            routing_key=incoming.routing_key,
            queue=queue,
        )
        count = broker_headers.get("x-delivery-count")
        letter = DeadLetter(queue, message, count if isinstance(count, int) else 0)
        taken.append((incoming, letter))
    return taken


async def browse(
    connection: AbstractConnection, queue: str, *, limit: int | None
) -> list[DeadLetter]:
    """The messages of `queue`, oldest first, all left where they were."""
    async with _holding(connection) as held:
        return [letter for _, letter in await _take_all(held, queue, limit)]


async def take(connection: AbstractConnection, queue: str, message_id: str) -> DeadLetter | None:
    """Remove the message `message_id` from `queue` (the others stay); None if it is not there."""
    async with _holding(connection) as held:
        for incoming, letter in await _take_all(held, queue, None):
            if letter.message_id == message_id:
                await incoming.ack()
                return letter
    return None


@dataclasses.dataclass
class ReplayReport:
    replayed: list[DeadLetter] = dataclasses.field(default_factory=list)
    held: list[DeadLetter] = dataclasses.field(default_factory=list)
    """Chosen, but replayed `max_replays` times already: left in the DLQ."""
    unroutable: list[tuple[DeadLetter, str]] = dataclasses.field(default_factory=list)
    """Chosen, but the copy was refused (no origin, or nothing bound there now): left too."""


async def replay(
    connection: AbstractConnection,
    queue: str,
    choose: Callable[[DeadLetter], bool],
    *,
    max_replays: int = DEFAULT_MAX_REPLAYS,
    dry_run: bool = False,
) -> ReplayReport:
    """Send the chosen dead letters back where they came from; see the module docstring."""
    report = ReplayReport()
    publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        async with _holding(connection) as held:
            for incoming, letter in await _take_all(held, queue, None):
                if not choose(letter):
                    continue
                if letter.replays >= max_replays:
                    report.held.append(letter)
                    continue
                if not letter.exchange and not letter.routing_key:
                    report.unroutable.append((letter, "it does not say where it was first sent"))
                    continue
                if dry_run:
                    report.replayed.append(letter)
                    continue
                if publisher.is_closed:  # a refused exchange closed it
                    publisher = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                problem = await _republish(publisher, letter)
                if problem is not None:
                    report.unroutable.append((letter, problem))
                    continue
                await incoming.ack()
                report.replayed.append(letter)
    finally:
        await amqp.close_quietly(publisher)
    return report


async def _republish(publisher: AbstractChannel, letter: DeadLetter) -> str | None:
    """Publish the copy and wait for the broker's confirm; what went wrong, or None."""
    headers = {k: v for k, v in letter.message.headers.items() if k not in _DROPPED_ON_REPLAY}
    headers[protocol.H_REPLAY_COUNT] = letter.replays + 1
    copy = dataclasses.replace(letter.message, headers=headers)
    try:
        channel = await publisher.get_underlay_channel()
        await amqp.publish(channel, letter.exchange, letter.routing_key, copy)
    except aiormq.exceptions.PublishError:
        return f"no queue is bound for key {letter.routing_key!r} on {letter.exchange!r}"
    except aiormq.exceptions.ChannelNotFoundEntity:
        return f"exchange {letter.exchange!r} does not exist"
    except aiormq.exceptions.DeliveryError as exc:
        return f"the broker refused the copy: {exc}"
    return None


async def purge(connection: AbstractConnection, queue: str) -> int:
    """Delete every message of `queue`; how many there were."""
    channel = await connection.channel()
    try:
        target = await channel.get_queue(queue, ensure=True)
        result = await target.purge()
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise QueueMissing(queue) from None
    finally:
        await amqp.close_quietly(channel)
    return int(result.message_count or 0)


async def connect(url: str) -> AbstractConnection:
    """A plain connection for one operator command; `BrokerUnreachable` if there is none."""
    try:
        return await aio_pika.connect(
            url, timeout=10, client_properties={"connection_name": "sagawire-cli"}
        )
    except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
        raise amqp.unreachable(redact(url), exc) from None
