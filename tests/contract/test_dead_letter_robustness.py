"""Every delivery is settled, whatever its headers hold (DESIGN invariant 9).

Over a real RabbitMQ, messages a foreign client could send (built with `amqp_raw`) reach a
consumer that dead-letters them with a reason echoing their headers: each ends in the DLQ once,
with a bounded reason, nothing stays unacked, and the consumer's connection is never dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiormq.exceptions
import pamqp.frame
import pytest
import pytest_asyncio
from amqp_raw import Raw, entry_size, nested, publish_raw_properties
from pamqp import header
from pamqp.commands import Basic
from pamqp.exceptions import UnmarshalingException

from orchestrator.adapters.memory import MemorySagaStore
from orchestrator.adapters.rabbitmq import dead_letters
from orchestrator.core.machines import MachineRegistry
from orchestrator.daemon.metrics import metrics_registry, render
from orchestrator.runtime.system import ActorSystem
from participants_sdk import _rabbit_letters as letters
from participants_sdk import protocol
from participants_sdk.headers import MAX_REASON_BYTES
from participants_sdk.memory import MemoryBroker
from participants_sdk.rabbitmq import RabbitBroker
from participants_sdk.transport import Delivery
from tests.services import own_vhost

REPO = Path(__file__).resolve().parents[2]
SERVICE = "robust"
QUEUE = protocol.command_queue(SERVICE)
DLQ = protocol.dead_letter_queue(QUEUE)
MAX_REASON_HEADER = 1024
FRAME_PAYLOAD = 131_072 - 8  # RabbitMQ's default frame_max, less the frame's own header


@dataclasses.dataclass(frozen=True)
class Case:
    """A message no Python client would send, and what its dead letter must show."""

    headers: dict[str, Any] | None = None
    message_id: str | bytes = "m-1"
    reason_padding: int = 0
    dropped: tuple[str, ...] = ()
    """Headers the dead letter must say it left out (a minimal letter)."""
    unreadable: bool = False
    """Properties the consumer cannot decode: rejected, the DLQ shows the decoder's reason."""
    exchange: str = ""
    routing_key: str | bytes = QUEUE


def near_frame_limit() -> dict[str, Any]:
    """1 KB headers up to a few hundred bytes under the frame: the message itself fits, its
    dead letter with Sagawire's headers added would not."""
    headers: dict[str, Any] = {}
    size, n = 14 + 4, 0  # content header's fixed part, flags, table length
    while True:
        name, field = f"x-h{n:03}", ("S", "v" * 1000)
        if size + entry_size(name, field) > FRAME_PAYLOAD - 300:
            return headers
        headers[name] = field
        size += entry_size(name, field)
        n += 1


NEAR = near_frame_limit()
CASES = {
    "invalid_utf8_long_string": Case({"x-bad": ("S", b"\xff\xfe" * 8)}, dropped=("x-bad",)),
    "value_100kb": Case({"x-big": ("S", "v" * 100_000)}, dropped=("x-big",)),
    "decimal_mantissa_over_2_31": Case({"x-dec": ("D", (2, 2**32 - 1))}),
    "big_double": Case({"x-dbl": ("d", 1e300)}, dropped=("x-dbl",)),
    "far_future_timestamp": Case({"x-ts": ("T", 2**64 - 1)}, unreadable=True),
    "message_id_invalid_utf8": Case(message_id=b"m-\xff\xfe", unreadable=True),
    "deeply_nested_table": Case({"x-deep": nested(3000)}, unreadable=True),
    "headers_near_frame_limit": Case(NEAR, dropped=(max(NEAR),)),  # same sizes: by name
    "reason_200kb": Case({"x-ok": ("S", "fine")}, reason_padding=200_000),
    "routing_key_invalid_utf8": Case(  # matches the binding `robust.*` all the same
        {"x-ok": ("S", "fine")}, exchange=protocol.COMMANDS_EXCHANGE, routing_key=b"robust.\xff"
    ),
}


@pytest.fixture
def vhost_url(urls):
    """A virtual host of its own: the queue names are fixed."""
    with own_vhost(urls, f"sagawire_robust_{uuid.uuid4().hex[:8]}", REPO) as url:
        yield url


@pytest_asyncio.fixture
async def broker(vhost_url):
    broker = await RabbitBroker.connect(vhost_url, name="sagawire-test-robust")
    try:
        await broker.declare_topology([SERVICE])
        yield broker
    finally:
        await broker.close()


class DeadLetterAll:
    """Dead-letters every delivery with a reason that echoes all its headers; acks `ok`."""

    def __init__(self, padding: int = 0) -> None:
        self.padding = padding
        self.acked: list[str] = []
        self.ok = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        if delivery.message.type == "ok":
            await delivery.ack()
            self.acked.append(delivery.message.message_id)
            self.ok.set()
        else:
            reason = f"refused: {delivery.message.headers!r}" + "r" * self.padding
            await delivery.dead_letter(reason)


async def ready(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        return await dead_letters.depth(connection, queue)


async def wait_ready(url: str, queue: str, count: int, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while (got := await ready(url, queue)) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{queue} holds {got} message(s) after {within}s, not {count}")
        await asyncio.sleep(0.05)


def never_dropped(broker: RabbitBroker) -> bool:
    """The broker's counters, as the daemon's /metrics shows them, say no connection or
    consumer channel was ever lost."""
    text = render(metrics_registry(ActorSystem(MachineRegistry([]), MemorySagaStore(), broker)))
    lines = set(text.decode().splitlines())
    return {
        "sagawire_broker_reconnects_total 0.0",
        "sagawire_broker_channels_lost_total 0.0",
    } <= lines and (broker.reconnects, broker.consumers_lost) == (0, 0)


async def settle_everything_then_count(broker: RabbitBroker, url: str) -> tuple[int, int]:
    """Close the consumer (what it left unacked goes back to ready), then (queue, DLQ) counts."""
    await broker.close()
    return await ready(url, QUEUE), await ready(url, DLQ)


@pytest.mark.rabbitmq
@pytest.mark.asyncio
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_message_that_must_be_dead_lettered_is_settled_once_whatever_it_holds(
    broker, vhost_url, case
):
    handler = DeadLetterAll(case.reason_padding)
    await broker.consume(QUEUE, handler, prefetch=4)
    await publish_raw_properties(
        vhost_url,
        case.exchange,
        case.routing_key,
        b'{"n": 1}',
        headers_raw=case.headers,
        message_id=case.message_id,
        message_type="do_it",
        correlation_id="saga-1",
    )
    await wait_ready(vhost_url, DLQ, 1)

    await broker.publish(
        "", QUEUE, protocol.WireMessage.json(type="ok", payload={}, message_id="ok-1")
    )
    async with asyncio.timeout(10):
        await handler.ok.wait()
    assert handler.acked == ["ok-1"]
    assert never_dropped(broker), (broker.reconnects, broker.consumers_lost)
    assert await settle_everything_then_count(broker, vhost_url) == (0, 1)

    connection = await aio_pika.connect(vhost_url)
    async with connection:
        [letter] = await dead_letters.browse(connection, DLQ, limit=None)
    assert len(letter.reason.encode()) <= MAX_REASON_HEADER
    assert letter.message.body == b'{"n": 1}'
    if case.unreadable:
        assert letter.reason.startswith("properties unreadable: ")
        assert letter.from_queue == QUEUE
        return
    assert letter.reason.startswith("refused: {")
    assert (letter.message_id, letter.message.type) == ("m-1", "do_it")
    assert letter.message.correlation_id == "saga-1"
    routing_key = case.routing_key
    if isinstance(routing_key, bytes):
        routing_key = routing_key.decode(errors="replace")  # as the consumer could read it
    assert (letter.exchange, letter.routing_key) == (case.exchange, routing_key)
    assert letter.from_queue == QUEUE
    dropped = letter.message.header_display(protocol.H_DEAD_LETTER_DROPPED_HEADERS) or ""
    assert set(case.dropped) <= set(dropped.split(", ") if dropped else [])
    assert bool(dropped) == bool(case.dropped)


@pytest.mark.rabbitmq
@pytest.mark.asyncio
async def test_rabbitmq_itself_refuses_an_unknown_type_tag(broker, vhost_url):
    """Nothing to settle: the broker closes the publisher's connection (RabbitMQ 3.10)."""
    handler = DeadLetterAll()
    await broker.consume(QUEUE, handler)
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await publish_raw_properties(
            vhost_url, "", QUEUE, b"{}", headers_raw={"h": ("Z", Raw(b""))}
        )
    assert never_dropped(broker), (broker.reconnects, broker.consumers_lost)
    assert await settle_everything_then_count(broker, vhost_url) == (0, 0)


class RetryAll:
    def __init__(self) -> None:
        self.tries = 0

    async def __call__(self, delivery: Delivery) -> None:
        self.tries += 1
        await delivery.retry_later(0, {protocol.H_RETRIES: self.tries})


@pytest.mark.rabbitmq
@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [{"x-bad": ("S", b"\xff")}, {"x-dbl": ("d", 1e300)}],
    ids=["invalid_utf8_long_string", "big_double"],
)
async def test_a_retry_copy_that_cannot_be_sent_is_dead_lettered_instead(
    broker, vhost_url, headers
):
    handler = RetryAll()
    await broker.consume(QUEUE, handler)
    await publish_raw_properties(vhost_url, "", QUEUE, b"{}", headers_raw=headers)
    await wait_ready(vhost_url, DLQ, 1)
    assert handler.tries == 1
    assert never_dropped(broker), (broker.reconnects, broker.consumers_lost)
    assert await settle_everything_then_count(broker, vhost_url) == (0, 1)
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        [letter] = await dead_letters.browse(connection, DLQ, limit=None)
    assert letter.reason.startswith("cannot be retried: ")
    assert set(headers) <= set(
        (letter.message.header_display(protocol.H_DEAD_LETTER_DROPPED_HEADERS) or "").split(", ")
    )


# -- without a broker -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_memory_broker_bounds_a_dead_letter_reason_too():
    server = MemoryBroker()
    connection = server.connect()
    await connection.declare_topology(["payment"])
    await connection.publish(
        "", protocol.command_queue("payment"), protocol.WireMessage.json(type="x", payload={})
    )

    async def dead_letter(delivery: Delivery) -> None:
        await delivery.dead_letter("r" * 200_000)

    await connection.consume(protocol.command_queue("payment"), dead_letter)
    await server.wait_idle()
    [letter] = server.messages(protocol.dead_letter_queue(protocol.command_queue("payment")))
    reason = letter.header_str(protocol.H_DEAD_LETTER_REASON) or ""
    assert 0 < len(reason.encode()) <= MAX_REASON_BYTES
    assert reason.endswith("...")


def header_frame(properties: bytes, body_size: int = 5) -> bytes:
    """A content header frame on channel 1 with the encoded properties given."""
    payload = struct.pack(">HHQ", 60, 0, body_size) + properties
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


def headers_only(table: bytes) -> bytes:
    return struct.pack(">H", 1 << 13) + table  # the flag of the headers property


@pytest.mark.parametrize(
    ("table", "why"),
    [
        (b"\x00\x00\x00\x03\x01hZ", "Unknown type"),
        (b"\x00\x00\x00\x0b\x01hT" + struct.pack(">Q", 2**64 - 1), "out of range"),
        (b"\x00\x00\x00\x03\x01\xffV", "UnicodeDecodeError"),
    ],
    ids=["unknown_type_tag", "far_future_timestamp", "key_not_utf8"],
)
def test_a_header_frame_pamqp_cannot_decode_becomes_a_marker(table, why):
    consumed, channel, frame = pamqp.frame.unmarshal(header_frame(headers_only(table)))
    assert (channel, consumed) == (1, len(header_frame(headers_only(table))))
    assert isinstance(frame, header.ContentHeader)
    assert (frame.class_id, frame.body_size) == (60, 5)  # the body frames are read as usual
    [(name, reason)] = frame.properties.headers.items()
    assert name == protocol.H_UNREADABLE_PROPERTIES
    assert why in reason


def test_a_delivery_whose_routing_key_is_not_utf8_is_read_leniently():
    fields = b"\x03tag" + struct.pack(">QB", 9, 1) + b"\x02ex" + b"\x04k.\xff\xfe"
    payload = struct.pack(">I", 0x003C003C) + fields  # Basic.Deliver
    frame = struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"
    _, _, deliver = pamqp.frame.unmarshal(frame)
    assert isinstance(deliver, Basic.Deliver)
    assert (deliver.consumer_tag, deliver.delivery_tag, deliver.redelivered) == ("tag", 9, True)
    assert (deliver.exchange, deliver.routing_key) == ("ex", "k.\ufffd\ufffd")


def test_a_truncated_header_frame_is_still_an_error_of_the_stream():
    payload = b"\x00\x3c\x00"
    frame = struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"
    with pytest.raises(UnmarshalingException):
        pamqp.frame.unmarshal(frame)


def test_a_minimal_letter_keeps_sagawire_headers_first_then_the_smallest():
    message = protocol.WireMessage.json(
        type="do",
        payload={},
        headers={
            protocol.H_IDEMPOTENCY_KEY: "s:step:1",
            "x-bad": b"\xff",
            "x-large": "l" * 40_000,
            "x-larger": "l" * 50_000,
            "x-small": "s",
        },
    )
    letter = letters.dead_letter(message, "r" * 5000, "q", letters.PROPERTIES_BUDGET)
    headers = letter.message.headers
    assert letter.dropped == ("x-bad", "x-larger")
    assert headers[protocol.H_DEAD_LETTER_DROPPED_HEADERS] == "x-bad, x-larger"
    assert headers[protocol.H_IDEMPOTENCY_KEY] == "s:step:1"
    assert (headers["x-small"], len(headers["x-large"])) == ("s", 40_000)
    assert len(headers[protocol.H_DEAD_LETTER_REASON].encode()) <= MAX_REASON_BYTES
    assert letter.why is not None
    assert "cannot be encoded" in letter.why
    assert len(letter.why.encode()) < 400  # pamqp's error quotes the value: cut


def test_a_letter_that_encodes_and_fits_is_sent_whole():
    message = protocol.WireMessage.json(type="do", payload={}, headers={"x-dec": 1.5, "x-n": 2**40})
    letter = letters.dead_letter(message, "why", "q", letters.PROPERTIES_BUDGET)
    assert (letter.dropped, letter.why) == ((), None)
    assert letter.message.headers == {
        **message.headers,
        protocol.H_DEAD_LETTER_REASON: "why",
        protocol.H_DEAD_LETTER_QUEUE: "q",
        protocol.H_ORIGINAL_EXCHANGE: "",
        protocol.H_ORIGINAL_ROUTING_KEY: "",
    }


def test_the_budget_follows_a_smaller_frame():
    assert letters.budget(None) == letters.PROPERTIES_BUDGET
    assert letters.budget(131_072 - 8) == letters.PROPERTIES_BUDGET - 10
    assert letters.budget(8192 - 8) == (8192 - 8 - 12) // 2
