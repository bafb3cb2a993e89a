"""`ChannelAcks`: which ack frames a batch becomes, when it goes, and what its callers see.

The channel here records the frames it is given; `tests/contract/test_rabbitmq.py` shows on a
real broker that batched acks never settle a delivery still in hand.
"""

from __future__ import annotations

import asyncio

import aiormq.exceptions
import pytest

from participants_sdk._rabbit_acks import ChannelAcks

pytestmark = pytest.mark.asyncio


class RecordingChannel:
    def __init__(self) -> None:
        self.frames: list[tuple[int, bool]] = []
        self.closed = False

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        if self.closed:
            raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
        self.frames.append((delivery_tag, multiple))


def acks_for(
    channel: RecordingChannel, *, received: range | list[int], delay: float, prefetch: int = 64
) -> ChannelAcks:
    acks = ChannelAcks(channel, prefetch=prefetch, delay=delay)  # type: ignore[arg-type]
    for tag in received:
        acks.received(tag)
    return acks


async def test_acks_of_one_turn_go_as_one_multiple_ack():
    channel = RecordingChannel()
    acks = acks_for(channel, received=range(1, 6), delay=0)

    await asyncio.gather(*(acks.ack(tag) for tag in (3, 1, 5, 2, 4)))

    assert channel.frames == [(5, True)]
    assert acks.unsettled == 0


async def test_a_delivery_still_in_hand_bounds_the_multiple_ack():
    channel = RecordingChannel()
    acks = acks_for(channel, received=range(1, 6), delay=0)

    await asyncio.gather(*(acks.ack(tag) for tag in (1, 2, 4, 5)))

    assert channel.frames == [(2, True), (4, False), (5, False)]
    assert acks.unsettled == 1
    await acks.ack(3)
    assert channel.frames[3:] == [(3, True)]  # covers only 3: 4 and 5 were acked already


async def test_a_tag_not_received_yet_bounds_the_multiple_ack():
    channel = RecordingChannel()
    acks = acks_for(channel, received=[1, 2, 4], delay=0)  # 3 is still on its way

    await asyncio.gather(*(acks.ack(tag) for tag in (1, 2, 4)))

    assert channel.frames == [(2, True), (4, False)]
    acks.received(3)
    await acks.ack(3)
    assert channel.frames[2:] == [(3, True)]


async def test_a_delivery_settled_otherwise_lets_the_multiple_ack_pass_it():
    channel = RecordingChannel()
    acks = acks_for(channel, received=range(1, 4), delay=0)
    acks.settled_otherwise(2)  # its nack is written

    await asyncio.gather(acks.ack(1), acks.ack(3))

    assert channel.frames == [(3, True)]


async def test_a_batch_waits_its_delay_for_acks_of_later_turns():
    channel = RecordingChannel()
    acks = acks_for(channel, received=range(1, 3), delay=0.05)

    first = asyncio.create_task(acks.ack(1))
    for _ in range(5):  # later turns of the event loop
        await asyncio.sleep(0)
    assert channel.frames == []
    await asyncio.gather(first, acks.ack(2))

    assert channel.frames == [(2, True)]


async def test_a_batch_holding_half_the_prefetch_goes_without_waiting():
    channel = RecordingChannel()
    acks = acks_for(channel, received=range(1, 4), delay=600, prefetch=4)

    async with asyncio.timeout(5):
        await asyncio.gather(acks.ack(1), acks.ack(2))

    assert channel.frames == [(2, True)]


async def test_with_a_prefetch_of_one_every_ack_goes_at_once():
    channel = RecordingChannel()
    acks = acks_for(channel, received=[1], delay=600, prefetch=1)

    async with asyncio.timeout(5):
        await acks.ack(1)

    assert channel.frames == [(1, True)]


async def test_a_failed_write_reaches_every_ack_of_its_batch_and_the_next_batch_tries_again():
    channel = RecordingChannel()
    acks = acks_for(channel, received=range(1, 4), delay=0)
    channel.closed = True

    results = await asyncio.gather(acks.ack(1), acks.ack(2), return_exceptions=True)

    assert [type(result) for result in results] == [aiormq.exceptions.ChannelInvalidStateError] * 2
    channel.closed = False
    await acks.ack(3)
    assert channel.frames == [(3, True)]


async def test_a_cancelled_caller_does_not_cancel_the_batch_of_the_others():
    channel = RecordingChannel()
    acks = acks_for(channel, received=range(1, 3), delay=0.05)
    gone = asyncio.create_task(acks.ack(1))
    staying = asyncio.create_task(acks.ack(2))
    await asyncio.sleep(0)

    gone.cancel()
    await staying

    assert gone.cancelled()
    assert channel.frames == [(2, True)]
