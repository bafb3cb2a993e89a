"""One delivery from RabbitMQ, and how it is settled (`RabbitDelivery`).

`dead_letter` and `retry_later` publish a copy (confirmed) before acking the original; if the copy
is not confirmed, the original is requeued instead, so nothing is lost. Every delivery ends
settled, whatever its headers hold (see `_rabbit_letters`), along this chain for a dead letter:

1. the full dead letter: the original headers and Sagawire's dead-letter headers, reason bounded;
2. when that cannot be encoded or is too large, a minimal one (`_rabbit_letters`);
3. when not even that can be encoded, or the broker refuses it (unroutable, no such exchange,
   no permission), the delivery is rejected without requeue: the queue's own dead-letter
   exchange moves the untouched original to `<queue>.dlq`, with the broker's `x-death`;
4. when the copy is not confirmed (connection lost, timeout, nack), the delivery is requeued
   (on a closed channel the settle is dropped and the broker redelivers), as before.

A retry copy that cannot be sent is dead-lettered along the same chain. A delivery whose
properties could not be decoded (`_rabbit_frames`) is rejected at once, as in 3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import structlog
from pamqp.commands import Basic

from participants_sdk import _rabbit_letters as letters
from participants_sdk import amqp, protocol
from participants_sdk._rabbit_acks import ChannelAcks
from participants_sdk._rabbit_frames import unreadable
from participants_sdk.errors import (
    AccessRefused,
    AlreadySettledError,
    BrokerError,
    TopologyError,
    Unroutable,
)
from participants_sdk.headers import bounded

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiormq.abc import DeliveredMessage


_log = structlog.get_logger("participants_sdk.rabbitmq")


class Publisher(Protocol):
    async def publish(
        self, exchange: str, routing_key: str, message: protocol.WireMessage
    ) -> None: ...

    async def publish_later(
        self, queue: str, message: protocol.WireMessage, delay: float
    ) -> None: ...


class RabbitDelivery:
    """One delivery from a RabbitMQ queue; settle it exactly once."""

    def __init__(
        self,
        broker: Publisher,
        delivered: DeliveredMessage,
        deliver: Basic.Deliver,
        queue: str,
        acks: ChannelAcks,
    ) -> None:
        self._broker = broker
        self._channel = delivered.channel
        self._tag = delivery_tag(deliver)
        self._redelivered = bool(deliver.redelivered)
        self._queue = queue
        self._acks = acks
        self._message, self.broker_headers = amqp.from_amqp(
            delivered.header.properties,
            delivered.body,
            exchange=deliver.exchange,
            routing_key=deliver.routing_key,
            queue=queue,
        )
        """What RabbitMQ added (`x-death`, `x-delivery-count`): not part of `message.headers`."""
        self.settled_by: str | None = None
        self._sent = False  # a settle frame was handed to the channel

    @property
    def message(self) -> protocol.WireMessage:
        return self._message

    @property
    def queue(self) -> str:
        return self._queue

    @property
    def redelivered(self) -> bool:
        return self._redelivered

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
        return not self._channel.is_closed

    @property
    def pending(self) -> bool:
        """Not settled yet, on a live channel."""
        return self.settled_by is None and self.channel_open

    async def ack(self) -> None:
        if self._begin("ack"):
            await self._send("ack", self._ack)

    async def requeue(self) -> None:
        if self._begin("requeue"):
            await self._send("requeue", self._requeue)

    @property
    def unreadable(self) -> str | None:
        """Why its properties could not be decoded (`_rabbit_frames`); None when they were."""
        return unreadable(self._message.headers)

    async def dead_letter(self, reason: str) -> None:
        if not self._begin("dead_letter"):
            return
        try:
            await self._dead_letter(bounded(reason))
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave the delivery unacked
            await self._last_resort("dead_letter", exc)

    async def retry_later(self, delay: float, headers: dict[str, object]) -> None:
        if not self._begin("retry_later"):
            return
        try:
            again = self._message.with_headers(**headers)
            try:
                letters.check_retry(again, self._budget())
            except letters.Unsendable as exc:  # it would fail the same way on every try
                await self._dead_letter(bounded(f"cannot be retried: {exc}"))
                return
            failure = await self._move(self._broker.publish_later(self._queue, again, delay))
            if failure is None:
                return
            if isinstance(failure, BrokerError):
                await self._requeue_instead("retry_later", failure)
            else:
                await self._dead_letter(bounded(f"cannot be retried: {letters.short(failure)}"))
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave the delivery unacked
            await self._last_resort("retry_later", exc)

    async def reject(self, reason: str) -> None:
        """Reject without requeue: the queue's dead-letter exchange moves the original, as it
        came, to the queue's DLQ. For what cannot be dead-lettered by a copy."""
        if self._begin("reject"):
            await self._send("reject", self._reject)
            _log.warning(
                "message rejected to the DLQ as it came",
                queue=self._queue,
                message_id=self._message.message_id,
                reason=bounded(reason),
            )

    async def _dead_letter(self, reason: str) -> None:
        """Dead-letter (`reason` bounded already) along the chain of the module docstring."""
        message = self._message
        try:
            letter = letters.dead_letter(message, reason, self._queue, self._budget())
        except letters.Unsendable as exc:
            await self._send("reject", self._reject)
            self._log_rejected(reason, str(exc))
            return
        failure = await self._move(
            self._broker.publish(protocol.DEAD_LETTER_EXCHANGE, self._queue, letter.message)
        )
        if failure is None:
            _log.warning(
                "message dead-lettered",
                queue=self._queue,
                message_id=message.message_id,
                reason=reason,
                dropped_headers=len(letter.dropped) or None,
                why_minimal=letter.why,
            )
        elif _refused(failure):
            await self._send("reject", self._reject)
            self._log_rejected(reason, letters.short(failure))
        else:
            await self._requeue_instead("dead_letter", failure)

    def _log_rejected(self, reason: str, problem: str) -> None:
        _log.error(
            "dead letter not published; the message was rejected to the DLQ as it came",
            queue=self._queue,
            message_id=self._message.message_id,
            reason=reason,
            error=problem,
        )

    async def _last_resort(self, how: str, exc: Exception) -> None:
        """After an unexpected error: reject the delivery unless a settle went out already."""
        if not self._sent:
            await self._send("reject", self._reject)
        _log.error(
            "settling failed unexpectedly; the message was rejected to the DLQ unless settled",
            queue=self._queue,
            message_id=self._message.message_id,
            settle=how,
            error=letters.short(exc),
        )

    def _budget(self) -> int:
        # aiormq's channel knows the negotiated frame size; its abstract type does not say so.
        return letters.budget(getattr(self._channel, "max_content_size", None))

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

    async def _move(self, copy: Awaitable[None]) -> Exception | None:
        """Publish a copy elsewhere, then ack the original; what failed, or None once acked.

        On a failure the original is still in hand: the caller settles it otherwise.
        """
        try:
            await copy
        except Exception as exc:  # noqa: BLE001 - the caller decides by what failed
            return exc
        await self._send("ack", self._ack)
        return None

    async def _requeue_instead(self, how: str, exc: Exception) -> None:
        await self._send("requeue", self._requeue)
        _log.error(
            "copy not confirmed; the message was requeued instead",
            queue=self._queue,
            message_id=self._message.message_id,
            settle=how,
            error=letters.short(exc),
        )

    async def _ack(self) -> None:
        await self._acks.ack(self._tag)

    async def _requeue(self) -> None:
        try:
            await self._channel.basic_nack(self._tag, requeue=True)
        finally:  # only once its frame is out: until then no multiple ack may pass this tag
            self._acks.settled_otherwise(self._tag)

    async def _reject(self) -> None:
        try:
            await self._channel.basic_reject(self._tag, requeue=False)
        finally:
            self._acks.settled_otherwise(self._tag)

    async def _send(self, how: str, settle: Callable[[], Awaitable[None]]) -> None:
        self._sent = True
        try:
            await settle()
        except amqp.AMQP_ERRORS as exc:
            self._dropped(how, exc)

    def _dropped(self, how: str, exc: BaseException | None) -> None:
        _log.warning(
            "settle on a closed channel dropped; the broker redelivers the message",
            queue=self._queue,
            message_id=self._message.message_id,
            settle=how,
            error=None if exc is None else letters.short(exc),
        )


def _refused(exc: Exception) -> bool:
    """The copy itself was refused, by the client or the broker, not lost with the connection:
    sending it again would fail the same way."""
    return not isinstance(exc, BrokerError) or isinstance(
        exc, Unroutable | TopologyError | AccessRefused
    )


def delivery_tag(deliver: Basic.Deliver) -> int:
    tag = deliver.delivery_tag
    if tag is None:  # a delivery always has one; pamqp's type allows none
        raise BrokerError(f"delivery from {deliver.routing_key!r} has no delivery tag")
    return tag
