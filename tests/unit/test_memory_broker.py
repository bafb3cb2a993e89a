"""The memory broker keeps RabbitMQ's semantics that Sagawire's guarantees rest on."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from structlog.testing import capture_logs

from participants_sdk import MemoryBroker
from participants_sdk._memory_core import MemoryDelivery, topic_matches
from participants_sdk.errors import AlreadySettledError, BrokerClosed, TopologyError
from participants_sdk.protocol import (
    COMMANDS_EXCHANGE,
    CONTROL_EXCHANGE,
    CONTROL_QUEUE,
    CONTROL_ROUTING_KEY,
    DEAD_LETTER_EXCHANGE,
    DELIVERY_LIMIT_REASON,
    H_DEAD_LETTER_QUEUE,
    H_DEAD_LETTER_REASON,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_ROUTING_KEY,
    REPLIES_EXCHANGE,
    WireMessage,
    command_queue,
    dead_letter_queue,
    reply_queue,
)

PAYMENT_COMMANDS = command_queue("payment")


def msg(n: int = 0, **headers: object) -> WireMessage:
    return WireMessage.json(type="execute_payment", payload={"n": n}, headers=dict(headers))


def numbers(messages: list[WireMessage]) -> list[int]:
    return [int(m.body.decode().split(":")[1].rstrip("}")) for m in messages]


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker(delivery_limit=3)


@pytest.fixture(autouse=True)
def default_logging():
    # Another test may leave structlog configured for a stream that is closed by now.
    structlog.reset_defaults()


async def connected(broker: MemoryBroker, *services: str):
    conn = broker.connect()
    await conn.declare_topology(services or ("payment",))
    return conn


class Recorder:
    """A consumer that records its deliveries and settles them as told (or holds them)."""

    def __init__(self, settle: str | None = "ack") -> None:
        self.settle = settle
        self.deliveries: list[MemoryDelivery] = []
        self.arrived = asyncio.Event()

    async def __call__(self, delivery: MemoryDelivery) -> None:
        self.deliveries.append(delivery)
        self.arrived.set()
        if self.settle == "ack":
            await delivery.ack()
        elif self.settle == "requeue":
            await delivery.requeue()

    async def wait_for(self, count: int) -> None:
        while len(self.deliveries) < count:
            self.arrived.clear()
            await self.arrived.wait()


@pytest.mark.parametrize(
    ("binding", "key", "matches"),
    [
        ("payment.*", "payment.execute_payment", True),
        ("payment.*", "payment.a.b", False),
        ("payment.*", "payment", False),
        ("payment.*", "stock.prepare_order", False),
        ("#", "anything.at.all", True),
        ("#", "", True),
        ("payment.#", "payment", True),
        ("payment.#", "payment.a.b", True),
        ("*.refund_payment", "payment.refund_payment", True),
        ("#.refund", "a.b.refund", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
    ],
)
def test_topic_matching(binding, key, matches):
    assert topic_matches(binding, key) is matches


@pytest.mark.asyncio
async def test_topology_is_declared_idempotently(broker):
    conn = await connected(broker, "payment", "stock")
    await conn.declare_topology(["payment"])
    for queue in (CONTROL_QUEUE, PAYMENT_COMMANDS, reply_queue("payment"), command_queue("stock")):
        assert queue in broker.queue_names()
        assert dead_letter_queue(queue) in broker.queue_names()
    assert len(broker.queue_names()) == 10


@pytest.mark.asyncio
async def test_routing_by_topic_direct_and_default_exchange(broker):
    conn = await connected(broker, "payment", "stock")
    await conn.publish(COMMANDS_EXCHANGE, "payment.execute_payment", msg(1))
    await conn.publish(COMMANDS_EXCHANGE, "stock.prepare_order", msg(2))
    await conn.publish(REPLIES_EXCHANGE, "stock", msg(3))
    await conn.publish(CONTROL_EXCHANGE, CONTROL_ROUTING_KEY, msg(4))
    await conn.publish("", reply_queue("payment"), msg(5))  # the default exchange
    assert numbers(broker.messages(PAYMENT_COMMANDS)) == [1]
    assert numbers(broker.messages(command_queue("stock"))) == [2]
    assert numbers(broker.messages(reply_queue("stock"))) == [3]
    assert numbers(broker.messages(CONTROL_QUEUE)) == [4]
    assert numbers(broker.messages(reply_queue("payment"))) == [5]
    routed = broker.messages(PAYMENT_COMMANDS)[0]
    assert (routed.exchange, routed.routing_key) == (COMMANDS_EXCHANGE, "payment.execute_payment")
    assert broker.unroutable == []


@pytest.mark.asyncio
async def test_a_wildcard_binding_taps_every_command(broker):
    conn = await connected(broker, "payment", "stock")
    broker.bind(COMMANDS_EXCHANGE, "#", "audit")
    await conn.publish(COMMANDS_EXCHANGE, "payment.execute_payment", msg(1))
    await conn.publish(COMMANDS_EXCHANGE, "stock.prepare_order", msg(2))
    assert numbers(broker.messages("audit")) == [1, 2]
    assert broker.queue_depth(PAYMENT_COMMANDS) == 1


@pytest.mark.asyncio
async def test_unroutable_messages_are_kept(broker):
    conn = await connected(broker)
    await conn.publish(COMMANDS_EXCHANGE, "nobody.execute_payment", msg(1))
    await conn.publish(REPLIES_EXCHANGE, "nobody", msg(2))
    assert numbers(broker.unroutable) == [1, 2]
    assert broker.unroutable[0].routing_key == "nobody.execute_payment"


@pytest.mark.asyncio
async def test_undeclared_exchange_and_queue_are_errors(broker):
    conn = await connected(broker)
    with pytest.raises(TopologyError, match=r"sagawire\.nope"):
        await conn.publish("sagawire.nope", "x", msg())
    with pytest.raises(TopologyError, match=r"no\.such\.queue"):
        await conn.consume("no.such.queue", Recorder())


@pytest.mark.asyncio
async def test_closed_connection_refuses_to_publish(broker):
    conn = await connected(broker)
    await conn.close()
    await conn.close()  # idempotent
    with pytest.raises(BrokerClosed):
        await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg())
    with pytest.raises(ConnectionError):
        await conn.consume(PAYMENT_COMMANDS, Recorder())


@pytest.mark.asyncio
async def test_round_robin_across_consumers(broker):
    conn = await connected(broker)
    first, second = Recorder(), Recorder()
    await conn.consume(PAYMENT_COMMANDS, first)
    await conn.consume(PAYMENT_COMMANDS, second)
    for n in range(4):
        await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(n))
    await broker.wait_idle()
    assert numbers([d.message for d in first.deliveries]) == [0, 2]
    assert numbers([d.message for d in second.deliveries]) == [1, 3]


@pytest.mark.asyncio
async def test_prefetch_bounds_unsettled_deliveries(broker):
    conn = await connected(broker)
    holder = Recorder(settle=None)
    await conn.consume(PAYMENT_COMMANDS, holder, prefetch=2)
    for n in range(5):
        await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(n))
    await holder.wait_for(2)
    assert broker.unsettled(PAYMENT_COMMANDS) == 2
    assert broker.queue_depth(PAYMENT_COMMANDS) == 3
    await holder.deliveries[0].ack()  # room for one more
    await holder.wait_for(3)
    assert broker.unsettled(PAYMENT_COMMANDS) == 2
    assert numbers(broker.messages(PAYMENT_COMMANDS)) == [3, 4]
    assert numbers([d.message for d in holder.deliveries]) == [0, 1, 2]


@pytest.mark.asyncio
async def test_requeue_redelivers_flagged_and_counted(broker):
    conn = await connected(broker)
    await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(1))
    seen: list[tuple[bool, int]] = []

    async def requeue_once(delivery: MemoryDelivery) -> None:
        seen.append((delivery.redelivered, delivery.delivery_count))
        await (delivery.ack() if delivery.redelivered else delivery.requeue())

    await conn.consume(PAYMENT_COMMANDS, requeue_once)
    await broker.wait_idle()
    assert seen == [(False, 0), (True, 1)]
    assert broker.queue_depth(PAYMENT_COMMANDS) == 0


@pytest.mark.asyncio
async def test_a_handler_that_raises_gets_its_message_requeued_and_logged(broker):
    conn = await connected(broker)
    await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(1))
    calls = 0

    async def crash_once(delivery: MemoryDelivery) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        await delivery.ack()

    with capture_logs() as logs:
        await conn.consume(PAYMENT_COMMANDS, crash_once)
        await broker.wait_idle()
    assert calls == 2
    assert any("requeued" in entry["event"] for entry in logs)


@pytest.mark.asyncio
async def test_delivery_limit_dead_letters_a_poison_message(broker):
    conn = await connected(broker)
    await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(7))
    always_requeue = Recorder(settle="requeue")
    await conn.consume(PAYMENT_COMMANDS, always_requeue)
    await broker.wait_idle()
    assert len(always_requeue.deliveries) == broker.delivery_limit + 1
    [letter] = broker.messages(dead_letter_queue(PAYMENT_COMMANDS))
    assert letter.headers[H_DEAD_LETTER_REASON] == DELIVERY_LIMIT_REASON
    assert letter.headers[H_DEAD_LETTER_QUEUE] == PAYMENT_COMMANDS
    assert broker.queue_depth(PAYMENT_COMMANDS) == 0


@pytest.mark.asyncio
async def test_dead_letter_copies_the_message_with_its_origin(broker):
    conn = await connected(broker)
    original = msg(1, keep="me")
    await conn.publish(COMMANDS_EXCHANGE, "payment.execute_payment", original)

    async def reject(delivery: MemoryDelivery) -> None:
        await delivery.dead_letter("amount: Field required")

    await conn.consume(PAYMENT_COMMANDS, reject)
    await broker.wait_idle()
    [letter] = broker.messages(dead_letter_queue(PAYMENT_COMMANDS))
    assert letter.message_id == original.message_id
    assert letter.body == original.body
    assert letter.headers == {
        "keep": "me",
        H_DEAD_LETTER_REASON: "amount: Field required",
        H_DEAD_LETTER_QUEUE: PAYMENT_COMMANDS,
        H_ORIGINAL_EXCHANGE: COMMANDS_EXCHANGE,
        H_ORIGINAL_ROUTING_KEY: "payment.execute_payment",
    }
    assert (letter.exchange, letter.routing_key) == (DEAD_LETTER_EXCHANGE, PAYMENT_COMMANDS)
    assert broker.unsettled(PAYMENT_COMMANDS) == 0


@pytest.mark.asyncio
async def test_retry_later_delays_do_not_block_each_other(broker):
    conn = await connected(broker)
    await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(1))  # retried after a long delay
    await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(2))  # retried after a short one
    loop = asyncio.get_running_loop()
    order: list[tuple[int, int]] = []
    started = loop.time()
    short_back = asyncio.Event()

    async def retry_once(delivery: MemoryDelivery) -> None:
        [n] = numbers([delivery.message])
        attempt = int(delivery.message.headers.get("attempt", 0))
        order.append((n, attempt))
        if attempt == 0:
            await delivery.retry_later(0.4 if n == 1 else 0.01, {"attempt": 1})
            return
        if n == 2:
            short_back.set()
        await delivery.ack()

    await conn.consume(PAYMENT_COMMANDS, retry_once)
    await short_back.wait()
    assert loop.time() - started < 0.3  # the short retry did not wait for the long one
    await broker.wait_idle()
    assert order == [(1, 0), (2, 0), (2, 1), (1, 1)]


@pytest.mark.asyncio
async def test_settling_twice_is_an_error(broker):
    conn = await connected(broker)
    holder = Recorder(settle=None)
    await conn.consume(PAYMENT_COMMANDS, holder)
    await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(1))
    await holder.wait_for(1)
    delivery = holder.deliveries[0]
    await delivery.ack()
    with pytest.raises(AlreadySettledError, match="settled already by ack"):
        await delivery.requeue()
    with pytest.raises(RuntimeError):
        await delivery.ack()


@pytest.mark.asyncio
async def test_close_returns_unsettled_deliveries_in_order_flagged_redelivered(broker):
    crashed = await connected(broker)
    holder = Recorder(settle=None)
    await crashed.consume(PAYMENT_COMMANDS, holder, prefetch=2)
    for n in range(3):
        await crashed.publish(COMMANDS_EXCHANGE, "payment.x", msg(n))
    await holder.wait_for(2)

    await crashed.close()
    assert numbers(broker.messages(PAYMENT_COMMANDS)) == [0, 1, 2]
    assert broker.unsettled(PAYMENT_COMMANDS) == 0
    with capture_logs() as logs:
        await holder.deliveries[0].ack()  # a stale channel: ignored, logged
    assert logs[0]["log_level"] == "warning"
    assert broker.queue_depth(PAYMENT_COMMANDS) == 3

    survivor = await connected(broker)
    recorder = Recorder()
    await survivor.consume(PAYMENT_COMMANDS, recorder)
    await broker.wait_idle()
    got = [(numbers([d.message])[0], d.redelivered) for d in recorder.deliveries]
    assert got == [(0, True), (1, True), (2, False)]


@pytest.mark.asyncio
async def test_cancelled_subscription_stops_deliveries(broker):
    conn = await connected(broker)
    recorder = Recorder()
    subscription = await conn.consume(PAYMENT_COMMANDS, recorder)
    await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(1))
    await broker.wait_idle()
    await subscription.cancel()
    await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(2))
    await broker.wait_idle()  # a queue nobody consumes does not keep the broker busy
    assert len(recorder.deliveries) == 1
    assert broker.queue_depth(PAYMENT_COMMANDS) == 1


@pytest.mark.asyncio
async def test_wait_idle_times_out_naming_what_is_busy(broker):
    conn = await connected(broker)
    holder = Recorder(settle=None)
    await conn.consume(PAYMENT_COMMANDS, holder)
    await conn.publish(COMMANDS_EXCHANGE, "payment.x", msg(1))
    with pytest.raises(TimeoutError, match=f"{PAYMENT_COMMANDS}: 0 ready, 1 unsettled"):
        await broker.wait_idle(timeout=0.05)
    await holder.deliveries[0].ack()
    await broker.wait_idle()
