"""`ChannelAcks`: the acks of one consuming channel, sent together.

Acked one by one, every delivery costs a frame, a socket write and a settle command in the
broker's queue. Here `ack` adds the delivery tag to a batch, which goes out `ACK_DELAY` seconds
after its first ack, or at once when it holds half the channel's prefetch (the broker must keep
room to deliver more). A batch is a single `basic.ack` with `multiple` for every tag below the
oldest delivery not settled yet, and one plain `basic.ack` for each of the others. `ack`
returns once its batch is written, as a lone ack returns once its frame is, and raises what a
lone ack would raise.

A multiple ack settles every unsettled delivery of the channel up to its tag, so it must never
reach a delivery still being handled. Tags on a channel count 1, 2, 3, ... and only this
consumer receives on it: a tag not yet seen here is a delivery still on its way to its handler,
and the multiple ack stops below it too. One task writes the batches, one after the other: a
multiple ack written before an earlier plain ack of a tag it covers would ack that tag twice,
which closes the channel.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel

ACK_DELAY: Final = 0.005
"""Seconds a batch of acks waits for more. A waiting ack only holds a prefetch slot (a batch
never waits with half the prefetch in it); the next step of a saga does not wait for it."""


class ChannelAcks:
    def __init__(
        self, channel: AbstractChannel, *, prefetch: int, delay: float = ACK_DELAY
    ) -> None:
        self._channel = channel
        self._full_at = max(1, prefetch // 2)
        self._delay = delay
        self._open: set[int] = set()
        """Tags received and not settled yet."""
        self._received_through = 0
        """Every tag up to this one has been received."""
        self._received_early: set[int] = set()
        """Tags received before a lower one. Deliveries reach their handlers in order, so this
        stays empty; it keeps the bound of a multiple ack right if they did not."""
        self._batch: list[int] = []
        self._batch_sent: asyncio.Future[None] | None = None
        self._batch_full: asyncio.Future[None] | None = None
        self._sending: asyncio.Task[None] | None = None

    def received(self, tag: int) -> None:
        """A delivery reached its handler: it must be settled (`ack` or `settled_otherwise`)."""
        self._open.add(tag)
        if tag == self._received_through + 1:
            self._received_through = tag
            early = self._received_early
            while early and self._received_through + 1 in early:
                self._received_through += 1
                early.discard(self._received_through)
        elif tag > self._received_through:
            self._received_early.add(tag)

    def settled_otherwise(self, tag: int) -> None:
        """The delivery was settled by a nack or a reject whose frame is written."""
        self._open.discard(tag)

    @property
    def unsettled(self) -> int:
        """Deliveries received and neither acked nor settled otherwise."""
        return len(self._open)

    async def ack(self, tag: int) -> None:
        """Ack the delivery with the others of its batch; return once the batch is written."""
        loop = asyncio.get_running_loop()
        self._open.discard(tag)
        self._batch.append(tag)
        if self._batch_sent is None:
            self._batch_sent = loop.create_future()
            self._batch_sent.add_done_callback(_retrieve)
        sent = self._batch_sent
        if len(self._batch) >= self._full_at:
            _resolve(self._batch_full)
        if self._sending is None:
            self._sending = loop.create_task(self._send(), name="sagawire-acks")
        # Shielded: a caller cancelled while it waits does not cancel its batch for the others.
        await asyncio.shield(sent)

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[None] | None = None
        try:
            while self._batch:
                if len(self._batch) < self._full_at and self._delay > 0:
                    self._batch_full = full = loop.create_future()
                    timer = loop.call_later(self._delay, _resolve, full)
                    try:
                        await full
                    finally:
                        timer.cancel()
                        self._batch_full = None
                tags, sent = self._batch, self._batch_sent
                self._batch, self._batch_sent = [], None
                await self._write(tags)
                _resolve(sent)
        except BaseException as exc:  # the channel is gone, or the loop stops
            # The batch being written, and the one queued meanwhile: no task writes them now.
            _fail(sent, exc)
            _fail(self._batch_sent, exc)
            self._batch, self._batch_sent = [], None
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._sending = None

    async def _write(self, tags: list[int]) -> None:
        bound = min(self._received_through + 1, min(self._open, default=self._received_through + 1))
        below = [tag for tag in tags if tag < bound]
        frames = [(max(below), True)] if below else []
        frames += [(tag, False) for tag in tags if tag >= bound]
        for n, (tag, multiple) in enumerate(frames, start=1):
            # Frames go out in order: waiting for the last to be written waits for all.
            await self._channel.basic_ack(tag, multiple=multiple, wait=n == len(frames))


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[None] | None, exc: BaseException) -> None:
    if future is None or future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(exc)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark the error seen: every caller may have been cancelled before it arrived."""
    if not future.cancelled():
        future.exception()
