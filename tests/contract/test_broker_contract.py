"""One broker contract, two brokers: what Sagawire relies on holds for memory and RabbitMQ alike."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from broker_support import MemoryBackend, RabbitBackend, Recorder, collect, open_backend, unique

from participants_sdk import protocol
from participants_sdk.errors import (
    AlreadySettledError,
    BrokerClosed,
    BrokerError,
    TopologyError,
    Unroutable,
)
from participants_sdk.protocol import WireMessage


@pytest_asyncio.fixture(
    params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)],
)
async def backend(request):
    backend = await open_backend(request.param)
    try:
        yield backend
    finally:
        await backend.close()


def command(n: int = 0, **headers: object) -> WireMessage:
    return WireMessage.json(
        type="do_it", payload={"n": n}, correlation_id=f"saga-{n}", headers=dict(headers)
    )


async def topology(backend: MemoryBackend | RabbitBackend):
    """A connection and a fresh service with its queues declared."""
    broker = await backend.connect()
    service = backend.service()
    await broker.declare_topology([service])
    return broker, service


@pytest.mark.asyncio
async def test_topology_routes_commands_and_replies_to_the_service_queues(backend):
    broker, service = await topology(backend)
    cmd, reply = command(1), command(2)
    await broker.publish(
        protocol.COMMANDS_EXCHANGE, protocol.command_routing_key(service, "do_it"), cmd
    )
    await broker.publish(protocol.REPLIES_EXCHANGE, service, reply)

    [got_cmd] = await collect(broker, protocol.command_queue(service), expect=1)
    [got_reply] = await collect(broker, protocol.reply_queue(service), expect=1)
    assert got_cmd.message_id == cmd.message_id
    assert (got_cmd.exchange, got_cmd.routing_key) == (
        protocol.COMMANDS_EXCHANGE,
        f"{service}.do_it",
    )
    assert got_reply.message_id == reply.message_id
    assert (got_reply.exchange, got_reply.routing_key) == (protocol.REPLIES_EXCHANGE, service)


@pytest.mark.asyncio
async def test_properties_and_headers_round_trip_exactly(backend):
    broker, service = await topology(backend)
    sent = WireMessage(
        message_id="m-1",
        type="payment_executed",
        body=b'{"amount":12.5,"note":"caf\xc3\xa9"}',
        correlation_id="saga-42",
        headers={
            protocol.H_MACHINE: "order",
            protocol.H_VERSION: 3,
            protocol.H_ATTEMPT: 1,
            protocol.H_STEP: "execute_payment",
            protocol.H_REJECTED: True,
            "x-flag-off": False,
            "x-negative": -7,
            "x-big": 2**40,
            "x-empty": "",
            protocol.H_TRACEPARENT: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
        content_type="application/json; charset=utf-8",
    )
    key = protocol.command_routing_key(service, "x")
    await broker.publish(protocol.COMMANDS_EXCHANGE, key, sent)
    recorder = Recorder()
    await broker.consume(protocol.command_queue(service), recorder)
    await recorder.wait_for(1)
    [delivery] = recorder.deliveries
    assert delivery.message == sent.routed(protocol.COMMANDS_EXCHANGE, key)
    assert delivery.queue == protocol.command_queue(service)
    assert delivery.redelivered is False


@pytest.mark.asyncio
async def test_ack_removes_the_message(backend):
    broker, service = await topology(backend)
    await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(1))
    assert len(await collect(broker, protocol.command_queue(service), expect=1)) == 1

    again = await backend.connect()
    assert await collect(again, protocol.command_queue(service), within=0.3) == []


@pytest.mark.asyncio
async def test_requeue_redelivers_flagged_redelivered(backend):
    broker, service = await topology(backend)
    await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(1))
    recorder = Recorder(settle=None)
    seen: list[bool] = []  # read at delivery: the memory broker's flag is live

    async def requeue_once(delivery):
        seen.append(delivery.redelivered)
        await recorder(delivery)
        await (delivery.ack() if delivery.redelivered else delivery.requeue())

    await broker.consume(protocol.command_queue(service), requeue_once)
    await recorder.wait_for(2)
    assert seen == [False, True]
    assert await collect(await backend.connect(), protocol.command_queue(service), within=0.2) == []


@pytest.mark.asyncio
async def test_a_handler_that_raises_gets_its_message_redelivered(backend):
    broker, service = await topology(backend)
    await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(1))
    recorder = Recorder(settle=None)
    seen: list[bool] = []  # read at delivery: the memory broker's flag is live

    async def crash_once(delivery):
        seen.append(delivery.redelivered)
        await recorder(delivery)
        if len(recorder.deliveries) == 1:
            raise RuntimeError("boom")
        await delivery.ack()

    await broker.consume(protocol.command_queue(service), crash_once)
    await recorder.wait_for(2)
    assert seen == [False, True]


@pytest.mark.asyncio
async def test_dead_letter_moves_the_message_to_the_dlq_with_its_origin(backend):
    broker, service = await topology(backend)
    queue, key = (
        protocol.command_queue(service),
        protocol.command_routing_key(service, "execute_payment"),
    )
    sent = command(1, keep="me")
    await broker.publish(protocol.COMMANDS_EXCHANGE, key, sent)

    async def reject(delivery):
        await delivery.dead_letter("amount: Field required")

    await broker.consume(queue, reject)
    [letter] = await collect(broker, protocol.dead_letter_queue(queue), expect=1)
    assert (letter.message_id, letter.body, letter.type) == (sent.message_id, sent.body, "do_it")
    assert letter.headers == {
        "keep": "me",
        protocol.H_DEAD_LETTER_REASON: "amount: Field required",
        protocol.H_DEAD_LETTER_QUEUE: queue,
        protocol.H_ORIGINAL_EXCHANGE: protocol.COMMANDS_EXCHANGE,
        protocol.H_ORIGINAL_ROUTING_KEY: key,
    }
    assert (letter.exchange, letter.routing_key) == (protocol.DEAD_LETTER_EXCHANGE, queue)
    assert await collect(await backend.connect(), queue, within=0.2) == []


@pytest.mark.asyncio
async def test_retry_later_redelivers_after_the_delay_with_extra_headers(backend):
    broker, service = await topology(backend)
    key = f"{service}.x"
    sent = command(1, keep="me")
    await broker.publish(protocol.COMMANDS_EXCHANGE, key, sent)
    loop = asyncio.get_running_loop()
    retried_at: list[float] = []
    back = asyncio.Event()
    got: list[WireMessage] = []

    async def retry_once(delivery):
        if not retried_at:
            await delivery.retry_later(0.3, {protocol.H_RETRIES: 1})
            retried_at.append(loop.time())
            return
        got.append(delivery.message)
        await delivery.ack()
        back.set()

    await broker.consume(protocol.command_queue(service), retry_once)
    async with asyncio.timeout(5):
        await back.wait()
    assert loop.time() - retried_at[0] >= 0.25
    [again] = got
    assert again == sent.with_headers(**{protocol.H_RETRIES: 1}).routed(
        protocol.COMMANDS_EXCHANGE, key
    )


@pytest.mark.asyncio
async def test_a_short_retry_does_not_wait_behind_a_long_one(backend):
    broker, service = await topology(backend)
    await broker.publish(
        protocol.COMMANDS_EXCHANGE, f"{service}.x", command(1)
    )  # retried after 2 s
    await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(2))  # then after 0.3 s
    loop = asyncio.get_running_loop()
    order: list[tuple[int, int]] = []
    short_back = asyncio.Event()
    started = loop.time()

    async def retry_once(delivery):
        n = int(delivery.message.correlation_id.removeprefix("saga-"))
        retries = delivery.message.header_int(protocol.H_RETRIES) or 0
        order.append((n, retries))
        if retries == 0:
            await delivery.retry_later(2.0 if n == 1 else 0.3, {protocol.H_RETRIES: 1})
            return
        await delivery.ack()
        if n == 2:
            short_back.set()

    await broker.consume(protocol.command_queue(service), retry_once, prefetch=1)
    async with asyncio.timeout(5):
        await short_back.wait()
    assert loop.time() - started < 1.5  # the 0.3 s retry did not wait for the 2 s one
    assert order == [(1, 0), (2, 0), (2, 1)]  # and the long one is still waiting


@pytest.mark.asyncio
async def test_a_closed_connection_returns_its_unsettled_deliveries_redelivered(backend):
    crashed, service = await topology(backend)
    holder = Recorder(settle=None)
    await crashed.consume(protocol.command_queue(service), holder)
    await crashed.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(1))
    await holder.wait_for(1)

    await crashed.close()
    await holder.deliveries[0].ack()  # on a closed connection: dropped, not raised

    survivor = await backend.connect()
    recorder = Recorder()
    await survivor.consume(protocol.command_queue(service), recorder)
    await recorder.wait_for(1)
    [delivery] = recorder.deliveries
    assert delivery.message.message_id == holder.deliveries[0].message.message_id
    assert delivery.redelivered is True


@pytest.mark.asyncio
async def test_prefetch_bounds_the_deliveries_in_flight_and_handlers_run_concurrently(backend):
    broker, service = await topology(backend)
    for n in range(5):
        await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(n))
    holder = Recorder(hold=True)  # each handler waits, holding its delivery unsettled
    await broker.consume(protocol.command_queue(service), holder, prefetch=2)
    await holder.wait_for(2)
    await asyncio.sleep(0.3)  # room for a third delivery, were prefetch not respected
    assert len(holder.deliveries) == 2
    assert holder.most_running == 2  # the two handlers run at the same time

    holder.release()
    await holder.wait_for(5)
    assert [m.correlation_id for m in holder.messages] == [f"saga-{n}" for n in range(5)]
    assert holder.most_running <= 2


@pytest.mark.asyncio
async def test_settling_twice_is_an_error(backend):
    broker, service = await topology(backend)
    holder = Recorder(settle=None)
    await broker.consume(protocol.command_queue(service), holder)
    await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(1))
    await holder.wait_for(1)
    delivery = holder.deliveries[0]
    await delivery.ack()
    with pytest.raises(AlreadySettledError, match="settled already by ack"):
        await delivery.requeue()
    with pytest.raises(AlreadySettledError):
        await delivery.dead_letter("again")


@pytest.mark.asyncio
async def test_a_cancelled_subscription_gets_no_more_deliveries(backend):
    broker, service = await topology(backend)
    recorder = Recorder()
    subscription = await broker.consume(protocol.command_queue(service), recorder)
    await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(1))
    await recorder.wait_for(1)
    await subscription.cancel()
    await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(2))
    await asyncio.sleep(0.2)
    assert len(recorder.deliveries) == 1
    [left] = await collect(broker, protocol.command_queue(service), expect=1)
    assert left.correlation_id == "saga-2"


@pytest.mark.asyncio
async def test_an_unroutable_publish_is_never_dropped_silently(backend):
    broker, _ = await topology(backend)
    lost = command(1)
    key = protocol.command_routing_key(unique("nobody"), "x")
    if isinstance(backend, MemoryBackend):
        await broker.publish(protocol.COMMANDS_EXCHANGE, key, lost)
        assert backend.server.unroutable[-1].message_id == lost.message_id
    else:
        with pytest.raises(Unroutable, match=rf"exchange 'sagawire.commands' key '{key}'"):
            await broker.publish(protocol.COMMANDS_EXCHANGE, key, lost)
        assert issubclass(Unroutable, BrokerError)


@pytest.mark.asyncio
async def test_a_publish_to_a_missing_exchange_is_a_topology_error_and_leaves_publishing_usable(
    backend,
):
    broker, service = await topology(backend)
    with pytest.raises(TopologyError, match=r"sagawire\.nowhere"):
        await broker.publish("sagawire.nowhere", "x", command(1))
    await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(2))
    [got] = await collect(broker, protocol.command_queue(service), expect=1)
    assert got.correlation_id == "saga-2"


@pytest.mark.asyncio
async def test_declaring_the_topology_twice_changes_nothing(backend):
    broker, service = await topology(backend)
    await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(1))
    await broker.declare_topology([service])
    other = await backend.connect()
    await other.declare_topology([service])
    [kept] = await collect(broker, protocol.command_queue(service), expect=1)
    assert kept.correlation_id == "saga-1"


@pytest.mark.asyncio
async def test_concurrent_publishes_all_confirm(backend):
    broker, service = await topology(backend)
    sent = [command(n) for n in range(50)]
    await asyncio.gather(
        *(broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", m) for m in sent)
    )
    got = await collect(broker, protocol.command_queue(service), expect=50)
    assert sorted(m.message_id for m in got) == sorted(m.message_id for m in sent)


@pytest.mark.asyncio
async def test_consuming_an_undeclared_queue_is_a_topology_error(backend):
    broker = await backend.connect()
    with pytest.raises(TopologyError, match=r"sagawire\.nobody\.commands"):
        await broker.consume("sagawire.nobody.commands", Recorder())


@pytest.mark.asyncio
async def test_a_closed_broker_refuses_work_and_closes_once(backend):
    broker, service = await topology(backend)
    await broker.close()
    await broker.close()
    with pytest.raises(BrokerClosed):
        await broker.publish(protocol.COMMANDS_EXCHANGE, f"{service}.x", command(1))
    with pytest.raises(BrokerClosed):
        await broker.consume(protocol.command_queue(service), Recorder())
