"""The memory broker's server side: exchanges, queues, consumers and deliveries (see `memory`)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import operator
from collections import deque
from typing import TYPE_CHECKING, Final, Literal

import structlog

from participants_sdk import protocol
from participants_sdk._consuming import run_handler
from participants_sdk.errors import AlreadySettledError, TopologyError
from participants_sdk.headers import bounded

if TYPE_CHECKING:
    from collections.abc import Callable

    from participants_sdk.transport import DeliveryHandler

DEFAULT_EXCHANGE: Final = ""

_log = structlog.get_logger(__name__)


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic matching: dot-separated words, `*` is exactly one word, `#` zero or more."""
    return _match(tuple(binding_key.split(".")), tuple(routing_key.split(".")))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in {"*", words[0]} and _match(rest, words[1:])


@dataclasses.dataclass(eq=False)
class _Exchange:
    kind: Literal["topic", "direct"]
    bindings: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (key, queue)

    def route(self, routing_key: str) -> list[str]:
        matches = topic_matches if self.kind == "topic" else operator.eq
        return list(dict.fromkeys(q for key, q in self.bindings if matches(key, routing_key)))


@dataclasses.dataclass(eq=False)
class _Entry:
    message: protocol.WireMessage
    returns: int = 0  # how often it came back unsettled: the quorum queue's delivery count


@dataclasses.dataclass(eq=False)
class _Queue:
    name: str
    dead_letters: bool  # False for the DLQs themselves: they keep what they hold, no limit
    ready: deque[_Entry] = dataclasses.field(default_factory=deque)
    consumers: list[Consumer] = dataclasses.field(default_factory=list)
    unsettled: set[MemoryDelivery] = dataclasses.field(default_factory=set)
    cursor: int = 0

    def next_consumer(self) -> Consumer | None:
        """Round-robin over the consumers that have room under their prefetch."""
        count = len(self.consumers)
        for offset in range(count):
            index = (self.cursor + offset) % count
            consumer = self.consumers[index]
            if len(consumer.unsettled) < consumer.prefetch:
                self.cursor = index + 1
                return consumer
        return None


@dataclasses.dataclass(eq=False)
class Consumer:
    queue: _Queue
    handler: DeliveryHandler
    prefetch: int
    unsettled: dict[int, MemoryDelivery] = dataclasses.field(default_factory=dict)

    def cancel(self) -> None:
        if self in self.queue.consumers:
            self.queue.consumers.remove(self)

    def release(self, delivery: MemoryDelivery) -> None:
        self.unsettled.pop(delivery.tag, None)
        self.queue.unsettled.discard(delivery)


class MemoryDelivery:
    """One delivery of a queued message to a consumer; settle it exactly once."""

    def __init__(self, core: Core, consumer: Consumer, entry: _Entry, tag: int) -> None:
        self.core = core
        self.consumer = consumer
        self.entry = entry
        self.tag = tag
        # Fixed when delivered, as AMQP's flag is: a later requeue does not change this delivery.
        self._returns = entry.returns
        self.settled_by: str | None = None
        self.stale = False  # its connection closed and the message went back to the queue

    @property
    def message(self) -> protocol.WireMessage:
        return self.entry.message

    @property
    def queue(self) -> str:
        return self.consumer.queue.name

    @property
    def redelivered(self) -> bool:
        return self._returns > 0

    @property
    def delivery_count(self) -> int:
        """How many earlier deliveries of this message came back unsettled."""
        return self._returns

    @property
    def pending(self) -> bool:
        """Not settled yet, on a live connection."""
        return self.settled_by is None and not self.stale

    async def ack(self) -> None:
        self._settle("ack")

    async def requeue(self) -> None:
        self._settle("requeue", lambda: self.core.give_back(self.consumer.queue, self.entry))

    async def dead_letter(self, reason: str) -> None:
        reason = bounded(reason)  # as RabbitMQ's deliveries do: no unbounded echo in a header
        self._settle(
            "dead_letter", lambda: self.core.dead_letter(self.consumer.queue, self.message, reason)
        )

    async def retry_later(self, delay: float, headers: dict[str, object]) -> None:
        again, queue = self.message.with_headers(**headers), self.consumer.queue
        self._settle("retry_later", lambda: self.core.retry_later(queue, again, delay))

    def _settle(self, how: str, then: Callable[[], None] | None = None) -> None:
        if self.settled_by is not None:
            raise AlreadySettledError(
                f"cannot {how} message {self.message.message_id} from {self.queue}: "
                f"it was settled already by {self.settled_by}"
            )
        if self.stale:
            _log.warning(
                "settle on a closed connection ignored; the message was returned to its queue",
                queue=self.queue,
                message_id=self.message.message_id,
                settle=how,
            )
            return
        self.settled_by = how
        self.consumer.release(self)
        if then is not None:
            then()
        self.core.pump(self.consumer.queue)


class Core:
    """The server state shared by a broker and its connections."""

    def __init__(self, delivery_limit: int) -> None:
        self.delivery_limit = delivery_limit
        self.exchanges: dict[str, _Exchange] = {}
        self.queues: dict[str, _Queue] = {}
        self.unroutable: list[protocol.WireMessage] = []
        self.tags = itertools.count(1)
        self.tasks: set[asyncio.Task[None]] = set()
        self.retries_pending = 0
        self.changed = asyncio.Event()

    def declare_exchange(self, name: str, kind: Literal["topic", "direct"]) -> None:
        exchange = self.exchanges.setdefault(name, _Exchange(kind))
        if exchange.kind != kind:
            raise TopologyError(f"exchange {name!r} exists as {exchange.kind}, not {kind}")

    def declare_queue(self, name: str) -> None:
        if name in self.queues:
            return
        self.queues[name] = _Queue(name, dead_letters=True)
        dlq = protocol.dead_letter_queue(name)
        self.queues.setdefault(dlq, _Queue(dlq, dead_letters=False))
        self.declare_exchange(protocol.DEAD_LETTER_EXCHANGE, "direct")
        self.bind(protocol.DEAD_LETTER_EXCHANGE, name, dlq)

    def bind(self, exchange: str, key: str, queue: str) -> None:
        self.queue(queue)
        bindings = self.exchange(exchange).bindings
        if (key, queue) not in bindings:
            bindings.append((key, queue))

    def exchange(self, name: str) -> _Exchange:
        try:
            return self.exchanges[name]
        except KeyError:
            raise TopologyError(f"exchange {name!r} is not declared") from None

    def queue(self, name: str) -> _Queue:
        try:
            return self.queues[name]
        except KeyError:
            raise TopologyError(f"queue {name!r} is not declared") from None

    def route(self, exchange: str, routing_key: str, message: protocol.WireMessage) -> None:
        message = message.routed(exchange, routing_key)
        if exchange == DEFAULT_EXCHANGE:
            targets = [routing_key] if routing_key in self.queues else []
        else:
            targets = self.exchange(exchange).route(routing_key)
        if not targets:
            self.unroutable.append(message)
            _log.warning(
                "message unroutable, kept in MemoryBroker.unroutable",
                exchange=exchange,
                routing_key=routing_key,
                message_id=message.message_id,
            )
            self.changed.set()
        for name in targets:
            queue = self.queues[name]
            queue.ready.append(_Entry(message))
            self.pump(queue)

    def pump(self, queue: _Queue) -> None:
        """Hand ready messages to consumers with room, each delivery in its own task."""
        while queue.ready and (consumer := queue.next_consumer()) is not None:
            delivery = MemoryDelivery(self, consumer, queue.ready.popleft(), next(self.tags))
            consumer.unsettled[delivery.tag] = delivery
            queue.unsettled.add(delivery)
            task = asyncio.get_running_loop().create_task(
                run_handler(consumer.handler, delivery), name=f"{queue.name}#{delivery.tag}"
            )
            self.tasks.add(task)
            task.add_done_callback(self.task_done)
        self.changed.set()

    def task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.changed.set()

    def give_back(self, queue: _Queue, entry: _Entry) -> None:
        entry.returns += 1
        if queue.dead_letters and entry.returns > self.delivery_limit:
            self.dead_letter(queue, entry.message, protocol.DELIVERY_LIMIT_REASON)
        else:
            queue.ready.appendleft(entry)
            self.pump(queue)

    def dead_letter(self, queue: _Queue, message: protocol.WireMessage, reason: str) -> None:
        letter = message.with_headers(
            **{
                protocol.H_DEAD_LETTER_REASON: reason,
                protocol.H_DEAD_LETTER_QUEUE: queue.name,
                protocol.H_ORIGINAL_EXCHANGE: message.exchange,
                protocol.H_ORIGINAL_ROUTING_KEY: message.routing_key,
            }
        )
        self.route(protocol.DEAD_LETTER_EXCHANGE, queue.name, letter)
        _log.warning(
            "message dead-lettered", queue=queue.name, message_id=message.message_id, reason=reason
        )

    def retry_later(self, queue: _Queue, message: protocol.WireMessage, delay: float) -> None:
        """Re-enqueue after `delay`, like a per-message delay queue: no retry waits for another."""

        def arrive() -> None:
            self.retries_pending -= 1
            queue.ready.append(_Entry(message))
            self.pump(queue)

        self.retries_pending += 1
        asyncio.get_running_loop().call_later(max(delay, 0.0), arrive)

    def busy(self) -> list[str]:
        reasons = [
            f"{q.name}: {len(q.ready)} ready, {len(q.unsettled)} unsettled"
            for q in self.queues.values()
            if q.unsettled or (q.ready and q.consumers)
        ]
        if self.retries_pending:
            reasons.append(f"{self.retries_pending} retries pending")
        if self.tasks:
            reasons.append(f"{len(self.tasks)} delivery handlers running")
        return reasons
