"""What only a real RabbitMQ shows: queue arguments, delivery limits, connecting, confirms."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import aiormq.exceptions
import pytest
import pytest_asyncio
from broker_support import RabbitBackend, Recorder, collect, open_backend

from participants_sdk import protocol
from participants_sdk._rabbit_link import Link
from participants_sdk.errors import BrokerUnreachable, TopologyError
from participants_sdk.protocol import WireMessage
from participants_sdk.rabbitmq import RabbitBroker

pytestmark = pytest.mark.rabbitmq


@pytest_asyncio.fixture
async def backend():
    backend = await open_backend("rabbitmq")
    assert isinstance(backend, RabbitBackend)
    try:
        yield backend
    finally:
        await backend.close()


def message(n: int = 0) -> WireMessage:
    return WireMessage.json(type="do_it", payload={"n": n}, correlation_id=f"saga-{n}")


def quorum_arguments(queue: str, delivery_limit: int) -> dict[str, object]:
    """DESIGN.md's wire protocol, written out independently of the adapter's code."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": "sagawire.dlx",
        "x-dead-letter-routing-key": queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def redeclare(url: str, queue: str, arguments: dict[str, object]) -> None:
    """Declare `queue` with exactly `arguments`: RabbitMQ refuses if they differ from its own."""
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True, arguments=arguments)


@pytest.mark.asyncio
async def test_queues_carry_the_arguments_of_the_design(backend):
    queue = backend.queue()
    broker = await backend.connect()
    await broker.declare_queue(queue)

    await redeclare(backend.url, queue, quorum_arguments(queue, 20))
    await redeclare(backend.url, protocol.dead_letter_queue(queue), {"x-queue-type": "quorum"})
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        await redeclare(
            backend.url, queue, {**quorum_arguments(queue, 20), "x-overflow": "drop-head"}
        )

    await (await backend.connect()).declare_queue(queue)  # the same arguments again: fine
    classic = await backend.connect(queue_type="classic")
    with pytest.raises(TopologyError, match=rf"queue '{queue}' exists.*x-queue-type.*delete"):
        await classic.declare_queue(queue)
    other_limit = await backend.connect(delivery_limit=5)
    with pytest.raises(TopologyError, match=rf"queue '{queue}'.*x-delivery-limit"):
        await other_limit.declare_queue(queue)


@pytest.mark.asyncio
async def test_classic_queues_have_no_delivery_limit(backend):
    queue = backend.queue()
    classic = await backend.connect(queue_type="classic")
    await classic.declare_queue(queue)
    await redeclare(
        backend.url,
        queue,
        {
            "x-queue-type": "classic",
            "x-dead-letter-exchange": "sagawire.dlx",
            "x-dead-letter-routing-key": queue,
        },
    )


@pytest.mark.asyncio
async def test_delay_queues_are_quorum_queues_that_dead_letter_back_at_least_once(backend):
    queue = backend.queue()
    broker = await backend.connect()
    await broker.declare_queue(queue)
    await broker.publish("", queue, message(1))

    async def retry(delivery):
        await delivery.retry_later(0.2, {})

    subscription = await broker.consume(queue, retry)
    await asyncio.sleep(0.1)
    await subscription.cancel()
    await redeclare(
        backend.url,
        f"{queue}.delay.250",
        {
            "x-queue-type": "quorum",
            "x-message-ttl": 250,
            "x-dead-letter-exchange": f"{queue}.retry",
            "x-dead-letter-routing-key": queue,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    [back] = await collect(broker, queue, expect=1)
    assert (back.exchange, back.routing_key) == ("", queue)  # where it was first published


@pytest.mark.asyncio
async def test_a_poison_message_ends_in_the_dlq_after_the_delivery_limit(backend):
    queue = backend.queue()
    broker = await backend.connect(delivery_limit=2)
    await broker.declare_queue(queue)
    await broker.publish("", queue, message(7))
    counts: list[int | None] = []

    async def always_requeue(delivery):
        counts.append(delivery.delivery_count)
        await delivery.requeue()

    await broker.consume(queue, always_requeue)
    [letter] = await collect(broker, protocol.dead_letter_queue(queue), expect=1, within=5)
    assert counts == [0, 1, 2]  # delivered delivery_limit + 1 times, as the memory broker does
    assert letter.correlation_id == "saga-7"
    assert letter.headers == {  # read from x-death: the same headers as a dead_letter() gives
        protocol.H_DEAD_LETTER_REASON: "delivery limit exceeded",
        protocol.H_DEAD_LETTER_QUEUE: queue,
        protocol.H_ORIGINAL_EXCHANGE: "",
        protocol.H_ORIGINAL_ROUTING_KEY: queue,
    }


@pytest.mark.asyncio
async def test_connecting_to_a_closed_port_fails_fast_without_the_password():
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as caught:
        await RabbitBroker.connect("amqp://guest:secret@127.0.0.1:1/", connect_timeout=2)
    assert time.monotonic() - started < 2
    text = str(caught.value)
    assert "secret" not in text
    assert "amqp://guest:***@127.0.0.1:1/" in text
    assert "connection refused" in text
    assert "make services" in text
    assert "\n" not in text


@pytest.mark.asyncio
async def test_gathered_publishes_are_pipelined_and_all_confirmed(backend):
    queue = backend.queue()
    broker = await backend.connect()
    await broker.declare_queue(queue)
    count = 200

    started = time.perf_counter()
    for n in range(count):
        await broker.publish("", queue, message(n))
    sequential = time.perf_counter() - started

    started = time.perf_counter()
    await asyncio.gather(*(broker.publish("", queue, message(n)) for n in range(count)))
    gathered = time.perf_counter() - started

    print(  # noqa: T201 - the numbers are the point; see them with -s
        f"\n{count} confirmed publishes: sequential {sequential * 1000:.0f} ms "
        f"({count / sequential:.0f}/s), gathered {gathered * 1000:.0f} ms "
        f"({count / gathered:.0f}/s)"
    )
    got = await collect(broker, queue, expect=2 * count, within=10)
    assert len(got) == 2 * count


@pytest.mark.asyncio
async def test_after_a_lost_connection_consumers_come_back_and_old_deliveries_are_redelivered(
    backend,
):
    queue = backend.queue()
    broker = await backend.connect(reconnect_interval=0.1)
    await broker.declare_queue(queue)
    recorder = Recorder(settle=None)
    await broker.consume(queue, recorder)
    await broker.publish("", queue, message(1))
    await recorder.wait_for(1)

    transport = broker._link.connection.transport
    assert transport is not None
    await transport.connection.close(ConnectionResetError("simulated network failure"))

    await recorder.wait_for(2, within=10)  # the restored consumer gets it again
    before, after = recorder.deliveries
    await before.ack()  # its channel died with the connection: dropped, not raised
    assert after.message.message_id == before.message.message_id
    assert after.redelivered is True
    await after.ack()
    await broker.publish("", queue, message(2))  # publishing works again
    await recorder.wait_for(3)
    await recorder.deliveries[2].ack()


@pytest.mark.asyncio
async def test_close_waits_for_handlers_a_bounded_time_then_the_message_goes_back(backend):
    queue = backend.queue()
    stuck = await backend.connect(close_timeout=0.2)
    await stuck.declare_queue(queue)
    never = Recorder(hold=True)
    await stuck.consume(queue, never)
    await stuck.publish("", queue, message(1))
    await never.wait_for(1)

    started = time.monotonic()
    await stuck.close()
    assert time.monotonic() - started < 2
    await stuck.close()  # idempotent

    [again] = await collect(await backend.connect(), queue, expect=1)
    assert again.correlation_id == "saga-1"


@pytest.mark.asyncio
async def test_a_consumer_the_broker_cancelled_consumes_again_once_its_queue_is_back(backend):
    queue = backend.queue()
    broker = await backend.connect(reconnect_interval=0.1)
    await broker.declare_queue(queue)
    recorder = Recorder()
    await broker.consume(queue, recorder)
    admin = await aio_pika.connect(backend.url, timeout=5)
    async with admin:
        await (await admin.channel()).queue_delete(queue)  # the broker cancels the consumer
    async with asyncio.timeout(10):
        while not broker.consumers_lost:  # noqa: ASYNC110 - a counter has no event to await
            await asyncio.sleep(0.05)
    await broker.declare_queue(queue)  # an operator declares it again

    await broker.publish("", queue, message(1))
    await recorder.wait_for(1, within=10)
    assert recorder.messages[0].correlation_id == "saga-1"


@pytest.mark.asyncio
async def test_a_channel_error_on_a_consumer_channel_does_not_stop_consuming(backend):
    queue = backend.queue()
    broker = await backend.connect(reconnect_interval=0.1)
    await broker.declare_queue(queue)
    recorder = Recorder(settle=None)
    await broker.consume(queue, recorder)
    await broker.publish("", queue, message(1))
    await recorder.wait_for(1)
    first = recorder.deliveries[0]
    # An ack of a delivery tag the channel never gave is a channel error: the broker closes it.
    await first._channel.basic_ack(first._tag + 1000)

    await recorder.wait_for(2, within=10)  # the unacked one again, on a new channel
    again = recorder.deliveries[1]
    assert again.message.message_id == first.message.message_id
    assert again.redelivered
    await again.ack()


@pytest.mark.asyncio
async def test_a_reconnect_attempt_that_raises_cancelled_error_is_tried_again(backend, monkeypatch):
    """aiormq raises `CancelledError` when a broker that is starting drops the handshake; that
    attempt must fail like any other, not end the task that reconnects (every consumer would
    stay detached for good)."""
    queue = backend.queue()
    broker = await backend.connect(reconnect_interval=0.1)
    await broker.declare_queue(queue)
    recorder = Recorder()
    await broker.consume(queue, recorder)

    real_open = Link.open
    attempts = 0

    async def open_once_cancelled(*args, **kwargs):
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise asyncio.CancelledError  # as from aiormq's reader, not from our task
        return await real_open(*args, **kwargs)

    monkeypatch.setattr(Link, "open", open_once_cancelled)
    transport = broker._link.connection.transport
    assert transport is not None
    await transport.connection.close(ConnectionResetError("simulated network failure"))

    async with asyncio.timeout(10):
        while broker.reconnects == 0:  # noqa: ASYNC110 - a counter has no event to await
            await asyncio.sleep(0.05)
    assert attempts == 2
    await broker.publish("", queue, message(1))
    await recorder.wait_for(1, within=10)


@pytest.mark.asyncio
async def test_acks_sent_together_never_settle_a_delivery_still_in_hand(backend):
    """Acks go out in batches, as multiple acks where they can: one handler still holding its
    delivery, and one requeueing, must see theirs come back, not acked by the others'."""
    queue = backend.queue()
    broker = await backend.connect()
    await broker.declare_queue(queue)
    recorder = Recorder(settle=None)
    await broker.consume(queue, recorder, prefetch=64)
    await asyncio.gather(*(broker.publish("", queue, message(n)) for n in range(40)))
    await recorder.wait_for(40)
    held, requeued = recorder.deliveries[5], recorder.deliveries[20]
    others = [d for d in recorder.deliveries if d not in (held, requeued)]

    await asyncio.gather(*(d.ack() for d in reversed(others)), requeued.requeue())
    await recorder.wait_for(41, within=5)
    again = recorder.deliveries[40]
    assert again.message.message_id == requeued.message.message_id
    await again.ack()
    await broker.close()  # the held delivery, never settled, goes back to the queue

    left = await collect(await backend.connect(), queue, expect=1, within=5)
    assert [m.message_id for m in left] == [held.message.message_id]
    assert len(recorder.deliveries) == 41  # nothing else came back: no tag was acked twice
