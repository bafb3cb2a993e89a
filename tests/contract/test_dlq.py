"""Dead-letter queues on a real RabbitMQ: reading leaves them as they were, replay gets every
saga going again, a message replayed too often is held, purge empties; and the CLI on top."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aio_pika
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from orchestrator.adapters.rabbitmq import dead_letters
from orchestrator.cli import commands  # noqa: F401 - registers the sub-commands
from orchestrator.cli.app import app
from orchestrator.core.machines import load_machines
from orchestrator.core.saga import SagaStatus
from orchestrator.demo.participants import DemoShop, FaultPlan, Ledger
from orchestrator.demo.participants import example_order as order
from orchestrator.testing import SagaHarness
from orchestrator.testing.backends import RabbitMongoBackend
from tests.services import own_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo]

REPO = Path(__file__).resolve().parents[2]
STOCK_DLQ = "sagawire.stock.commands.dlq"


@pytest.fixture
def amqp_url(urls):
    """A virtual host of its own: the DLQ names are the protocol's, shared on a vhost."""
    with own_vhost(urls, f"sagawire_dlq_{uuid.uuid4().hex[:8]}", REPO) as url:
        yield url


@pytest_asyncio.fixture
async def stuck_shop(request, amqp_url, urls):
    """Orders (100, or the test's parameter) whose prepare_order a broken stock service
    dead-lettered (it has no retries)."""
    count = getattr(request, "param", 100)
    registry = load_machines(REPO / "machines")
    shop = DemoShop(FaultPlan(), Ledger(), broken=frozenset({"prepare_order"}), max_retries=0)
    async with SagaHarness(registry, backend=RabbitMongoBackend(amqp_url, urls.mongodb)) as h:
        for service in shop.services():
            await h.serve(service)
        for n in range(count):
            await h.start("order", order(f"o-{n}"), f"o-{n}")
        await h.drain(timeout=60)
        connection = await aio_pika.connect(amqp_url)
        try:
            yield h, shop, connection
        finally:
            await connection.close()


@pytest.mark.asyncio
async def test_dead_lettered_commands_replayed_after_the_fix_finish_every_saga(stuck_shop):
    h, shop, connection = stuck_shop
    assert await dead_letters.depth(connection, STOCK_DLQ) == 100
    letters = await dead_letters.browse(connection, STOCK_DLQ, limit=None)
    assert all("stock.prepare_order is broken" in letter.reason for letter in letters)
    assert {(letter.exchange, letter.routing_key) for letter in letters} == {
        ("sagawire.commands", "stock.prepare_order")
    }
    again = await dead_letters.browse(connection, STOCK_DLQ, limit=None)
    assert [x.message_id for x in again] == [x.message_id for x in letters]  # order kept
    assert await dead_letters.depth(connection, STOCK_DLQ) == 100

    dry = await dead_letters.replay(connection, STOCK_DLQ, lambda _: True, dry_run=True)
    assert len(dry.replayed) == 100
    assert await dead_letters.depth(connection, STOCK_DLQ) == 100
    await h.drain()
    assert all(s.state == "prepare_order" for s in await h.sagas())

    shop.broken = frozenset()  # the stock service is fixed
    report = await dead_letters.replay(connection, STOCK_DLQ, lambda _: True)
    assert (len(report.replayed), report.held, report.unroutable) == (100, [], [])
    await h.drain(timeout=60)

    sagas = await h.sagas()
    assert len(sagas) == 100
    assert {s.status for s in sagas} == {SagaStatus.SUCCEEDED}
    assert await dead_letters.depth(connection, STOCK_DLQ) == 0
    applied = shop.ledger.applied
    assert shop.ledger.applied_twice == 0
    assert sum(1 for key in applied if ":prepare_order:" in key) == 100
    assert sum(1 for key in applied if ":deliver_order:" in key) == 100


@pytest.mark.asyncio
@pytest.mark.parametrize("stuck_shop", [10], indirect=True)
async def test_a_message_replayed_too_often_is_held_not_looped(stuck_shop):
    h, _, connection = stuck_shop  # stock stays broken: every replay comes back
    first = (await dead_letters.browse(connection, STOCK_DLQ, limit=1))[0]
    for replays in range(2):
        report = await dead_letters.replay(
            connection, STOCK_DLQ, lambda x: x.message_id == first.message_id, max_replays=2
        )
        assert [x.message_id for x in report.replayed] == [first.message_id]
        await h.drain()
        back = [
            x
            for x in await dead_letters.browse(connection, STOCK_DLQ, limit=None)
            if x.message_id == first.message_id
        ]
        assert [x.replays for x in back] == [replays + 1]
    report = await dead_letters.replay(
        connection, STOCK_DLQ, lambda x: x.message_id == first.message_id, max_replays=2
    )
    assert (report.replayed, [x.message_id for x in report.held]) == ([], [first.message_id])
    assert await dead_letters.depth(connection, STOCK_DLQ) == 10


async def sagawire(*args: str, answer: str | None = None):
    """Run the CLI in a thread of its own: it runs its own event loop."""
    return await asyncio.to_thread(
        CliRunner().invoke, app, list(args), input=answer, catch_exceptions=False
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("stuck_shop", [10], indirect=True)
async def test_the_dlq_commands(stuck_shop, amqp_url):
    _, _, connection = stuck_shop
    machines = str(REPO / "machines")
    common = ("--amqp-url", amqp_url, "--machines", machines)
    listed = await sagawire("dlq", "list", *common, "--json")
    assert listed.exit_code == 0, listed.output
    document = json.loads(listed.stdout)
    assert document[STOCK_DLQ]["depth"] == 10
    assert document["sagawire.payment.commands.dlq"]["depth"] == 0
    target = document[STOCK_DLQ]["messages"][0]["message_id"]

    shown = await sagawire("dlq", "show", target, *common, "--json")
    assert shown.exit_code == 0, shown.output
    details = json.loads(shown.stdout)
    assert (details["exchange"], details["routing_key"]) == (
        "sagawire.commands",
        "stock.prepare_order",
    )
    assert json.loads(details["body"])["order_id"].startswith("o-")
    assert (await sagawire("dlq", "show", "nope", *common)).exit_code == 1

    dry = await sagawire("dlq", "replay", "--queue", STOCK_DLQ, "--all", "--dry-run", *common)
    assert (dry.exit_code, dry.stdout.splitlines()[0]) == (0, "would replay 10 message(s)")
    assert await dead_letters.depth(connection, STOCK_DLQ) == 10
    assert (await sagawire("dlq", "replay", *common)).exit_code == 2
    missing = await sagawire("dlq", "replay", "--id", "nope", *common)
    assert missing.exit_code == 1
    assert "not found" in missing.stderr
    unknown_queue = await sagawire("dlq", "list", "--queue", "sagawire.nothing.commands", *common)
    assert unknown_queue.exit_code == 1
    assert "does not exist" in unknown_queue.stderr

    refused = await sagawire(
        "dlq", "purge", "--queue", STOCK_DLQ, "--amqp-url", amqp_url, answer="n\n"
    )
    assert refused.exit_code == 1
    assert await dead_letters.depth(connection, STOCK_DLQ) == 10
    purged = await sagawire(
        "dlq", "purge", "--queue", "sagawire.stock.commands", "--yes", "--amqp-url", amqp_url
    )
    assert (purged.exit_code, purged.stdout.strip()) == (
        0,
        f"purged 10 message(s) from {STOCK_DLQ}",
    )
    assert await dead_letters.depth(connection, STOCK_DLQ) == 0


@pytest.mark.asyncio
async def test_a_replayed_copy_goes_where_the_message_was_first_sent_with_fresh_retries(urls):
    from participants_sdk import protocol as p  # noqa: PLC0415
    from participants_sdk.rabbitmq import RabbitBroker  # noqa: PLC0415

    service = f"svc{uuid.uuid4().hex[:10]}"
    queue = p.command_queue(service)
    broker = await RabbitBroker.connect(urls.amqp, name="sagawire-test-dlq")
    connection = await aio_pika.connect(urls.amqp)
    try:
        await broker.declare_topology([service])
        letter = p.WireMessage.json(
            type="do",
            payload={"n": 1},
            message_id="m-1",
            headers={
                p.H_RETRIES: 5,
                p.H_IDEMPOTENCY_KEY: "s-1:do:1",
                p.H_DEAD_LETTER_REASON: "handler failed 6 times",
                p.H_DEAD_LETTER_QUEUE: queue,
                p.H_ORIGINAL_EXCHANGE: p.COMMANDS_EXCHANGE,
                p.H_ORIGINAL_ROUTING_KEY: f"{service}.do",
            },
        )
        await broker.publish(p.DEAD_LETTER_EXCHANGE, queue, letter)  # as a participant would

        report = await dead_letters.replay(connection, p.dead_letter_queue(queue), lambda _: True)
        assert [x.message_id for x in report.replayed] == ["m-1"]
        channel = await connection.channel()
        copy = await (await channel.get_queue(queue)).get(no_ack=True)
        assert copy.message_id == "m-1"
        assert copy.routing_key == f"{service}.do"
        headers = dict(copy.headers)
        assert headers[p.H_REPLAY_COUNT] == 1
        assert headers[p.H_IDEMPOTENCY_KEY] == "s-1:do:1"
        assert not {p.H_RETRIES, p.H_DEAD_LETTER_REASON, p.H_ORIGINAL_EXCHANGE} & set(headers)
        assert await dead_letters.depth(connection, p.dead_letter_queue(queue)) == 0
    finally:
        for name in (
            queue,
            p.dead_letter_queue(queue),
            p.reply_queue(service),
            p.dead_letter_queue(p.reply_queue(service)),
        ):
            channel = await connection.channel()
            await channel.queue_delete(name)
        await connection.close()
        await broker.close()
