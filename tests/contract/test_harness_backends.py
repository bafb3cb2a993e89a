"""The real backend of `SagaHarness`: how it tells that RabbitMQ is idle, and crash-like aborts."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
import pytest_asyncio
from broker_support import Recorder, amqp_url, unique

from orchestrator.testing.backends import RabbitMongoBackend, delete_queues, topology_queues
from participants_sdk import protocol

pytestmark = [pytest.mark.asyncio, pytest.mark.rabbitmq, pytest.mark.mongo]


@pytest_asyncio.fixture
async def backend(mongodb_url: str):
    service = unique("svc")
    backend = RabbitMongoBackend(amqp_url(), mongodb_url)
    await backend.start([service])
    backend.service = service  # type: ignore[attr-defined]
    try:
        yield backend
    finally:
        await backend.close()


def command(n: int) -> protocol.WireMessage:
    return protocol.WireMessage.json(type="do", payload={"n": n}, message_id=f"m-{n}")


async def test_a_held_delivery_keeps_it_busy_until_settled(backend) -> None:
    service = backend.service
    connection = await backend.connect()
    await connection.declare_topology([service])
    held = Recorder(settle=None)
    await connection.consume(protocol.command_queue(service), held)
    await connection.publish(
        protocol.COMMANDS_EXCHANGE, protocol.command_routing_key(service, "do"), command(1)
    )
    await held.wait_for(1)
    with pytest.raises(
        TimeoutError, match=rf"{protocol.command_queue(service)}: message m-1 unsettled"
    ):
        await backend.wait_idle(0.3)
    await held.deliveries[0].ack()
    await backend.wait_idle(2.0)


async def test_ready_messages_in_a_consumed_queue_keep_it_busy(backend) -> None:
    service = backend.service
    connection = await backend.connect()
    await connection.declare_topology([service])
    slow = Recorder(hold=True)
    await connection.consume(protocol.command_queue(service), slow, prefetch=1)
    for n in range(3):
        await connection.publish(
            protocol.COMMANDS_EXCHANGE, protocol.command_routing_key(service, "do"), command(n)
        )
    await slow.wait_for(1)
    with pytest.raises(TimeoutError, match=rf"{protocol.command_queue(service)}: 2 ready"):
        await backend.wait_idle(0.3)
    slow.release()
    await backend.wait_idle(5.0)
    assert [m.message_id for m in slow.messages] == ["m-0", "m-1", "m-2"]


async def test_abort_gives_held_deliveries_back_and_settles_nothing_later(backend) -> None:
    service = backend.service
    dying, survivor = await backend.connect(), await backend.connect()
    await dying.declare_topology([service])
    held = Recorder(settle=None)
    await dying.consume(protocol.command_queue(service), held)
    await dying.publish(
        protocol.COMMANDS_EXCHANGE, protocol.command_routing_key(service, "do"), command(7)
    )
    await held.wait_for(1)
    await backend.abort(dying)
    await held.deliveries[0].ack()  # dropped: the channel is gone
    again = Recorder()
    await survivor.consume(protocol.command_queue(service), again)
    await again.wait_for(1)
    assert again.deliveries[0].message.message_id == "m-7"
    assert again.deliveries[0].redelivered
    await backend.wait_idle(2.0)
    await asyncio.sleep(0.2)
    assert len(again.deliveries) == 1


async def test_close_deletes_the_topology_it_declared(mongodb_url: str) -> None:
    service = unique("svc")
    backend = RabbitMongoBackend(amqp_url(), mongodb_url)
    await backend.start([service])
    connection = await backend.connect()
    await connection.declare_topology([service])
    queues = [protocol.command_queue(service), protocol.reply_queue(service)]
    await backend.close()

    admin = await aio_pika.connect(amqp_url(), timeout=10)
    async with admin:
        # Nothing left to delete: every queue of its topology is gone.
        assert await delete_queues(admin, [*queues, *topology_queues([service])]) == []
