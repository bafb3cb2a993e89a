"""`sagawire topology permissions`: the printed permissions, applied to real RabbitMQ users.

A participant's user consumes its own commands, retries and dead-letters them, and publishes
its replies; it can neither read another service's queue nor publish commands. The daemon's
user declares the topology, publishes commands and reads replies and dead letters.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import aiormq.exceptions
import pytest
import pytest_asyncio
from broker_support import collect
from pydantic import BaseModel
from typer.testing import CliRunner

from orchestrator.cli import commands  # noqa: F401 - registers the sub-commands
from orchestrator.cli.app import app
from participants_sdk import CommandContext, Participant, RabbitBroker
from participants_sdk.errors import AccessRefused
from participants_sdk.protocol import (
    COMMANDS_EXCHANGE,
    CONTROL_EXCHANGE,
    CONTROL_ROUTING_KEY,
    H_ATTEMPT,
    H_DEAD_LETTER_REASON,
    H_IDEMPOTENCY_KEY,
    H_MACHINE,
    H_STEP,
    H_VERSION,
    H_VISIT,
    WireMessage,
    command_queue,
    dead_letter_queue,
    reply_queue,
)
from tests.services import own_vhost, rabbitmqctl

pytestmark = [pytest.mark.rabbitmq]

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-" + uuid.uuid4().hex[:6]


class Reserve(BaseModel):
    order_id: str


class Reserved(BaseModel):
    reservation: str


def command(name: str, order_id: str) -> WireMessage:
    return WireMessage.json(
        type=name,
        payload={"order_id": order_id},
        correlation_id=order_id,
        headers={
            H_MACHINE: "order",
            H_VERSION: 1,
            H_STEP: name,
            H_VISIT: 1,
            H_ATTEMPT: 1,
            H_IDEMPOTENCY_KEY: f"{order_id}:{name}:1",
        },
    )


def as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(PASSWORD)}@{host}"))


@pytest.fixture
def users(urls):
    """(participant URL, daemon URL): users with exactly the permissions the CLI prints."""
    if urls.source != "make services":
        pytest.fail(
            "creating RabbitMQ users needs rabbitmqctl on the node of `make services`; these "
            f"servers come from {urls.source}",
            pytrace=False,
        )
    suffix = uuid.uuid4().hex[:8]
    with own_vhost(urls, f"sagawire_perms_{suffix}", REPO) as url:
        vhost = urlsplit(url).path[1:]
        result = CliRunner().invoke(
            app,
            [
                *("topology", "permissions", "stock", "--vhost", vhost),
                *("--user", f"stock-{suffix}", "--daemon-user", f"daemon-{suffix}", "--json"),
            ],
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        made = []
        try:
            for role in ("participant", "daemon"):
                granted = report[role]
                rabbitmqctl(REPO, urls.amqp, "add_user", granted["user"], PASSWORD)
                made.append(granted["user"])
                rabbitmqctl(
                    REPO,
                    urls.amqp,
                    "set_permissions",
                    "-p",
                    vhost,
                    granted["user"],
                    granted["configure"],
                    granted["write"],
                    granted["read"],
                )
            yield as_user(url, made[0]), as_user(url, made[1])
        finally:
            for user in made:
                rabbitmqctl(REPO, urls.amqp, "delete_user", user)


def stock_service(calls: Counter[str]) -> Participant:
    participant = Participant("stock", retry_backoff=0.1)

    @participant.command_handler("reserve")
    async def reserve(cmd: Reserve, ctx: CommandContext) -> Reserved:
        calls[cmd.order_id] += 1
        if calls[cmd.order_id] == 1:
            raise ConnectionError("warehouse API timed out")  # retried through the delay queues
        return Reserved(reservation=f"r-{cmd.order_id}")

    return participant


@pytest_asyncio.fixture
async def daemon(users):
    broker = await RabbitBroker.connect(users[1])
    await broker.declare_topology(["stock", "payment"])
    yield broker
    await broker.close()


@pytest_asyncio.fixture
async def stock(users, daemon):
    broker = await RabbitBroker.connect(users[0])
    yield broker
    await broker.close()


@pytest.mark.asyncio
async def test_a_participant_user_consumes_retries_dead_letters_and_replies(daemon, stock):
    calls: Counter[str] = Counter()
    async with stock_service(calls).serve(stock):
        await daemon.publish(COMMANDS_EXCHANGE, "stock.reserve", command("reserve", "o-1"))
        await daemon.publish(COMMANDS_EXCHANGE, "stock.unknown", command("unknown", "o-2"))
        [reply] = await collect(daemon, reply_queue("stock"), expect=1, within=10)
        [dead] = await collect(
            daemon, dead_letter_queue(command_queue("stock")), expect=1, within=10
        )
    assert reply.type == "reserved"
    assert reply.header_str(H_IDEMPOTENCY_KEY) == "o-1:reserve:1"
    assert calls == Counter({"o-1": 2})  # the first attempt failed and came back once
    assert stock.delay_queues == {"sagawire.stock.commands.delay.100"}
    assert dead.type == "unknown"
    assert "unknown" in str(dead.headers[H_DEAD_LETTER_REASON])


@pytest.mark.asyncio
async def test_a_participant_user_cannot_read_other_queues_nor_publish_commands(
    users, daemon, stock
):
    refusals: dict[str, Callable[[], Awaitable[object]]] = {
        "consume payment's commands": lambda: stock.consume(command_queue("payment"), _never),
        "consume its own replies": lambda: stock.consume(reply_queue("stock"), _never),
        "consume its own DLQ": lambda: stock.consume(
            dead_letter_queue(command_queue("stock")), _never
        ),
        "publish a command": lambda: stock.publish(
            COMMANDS_EXCHANGE, "payment.charge", command("charge", "o-3")
        ),
        "publish into a queue by name": lambda: stock.publish(
            "", command_queue("payment"), command("charge", "o-4")
        ),
        "start a saga": lambda: stock.publish(
            CONTROL_EXCHANGE, CONTROL_ROUTING_KEY, command("start", "o-5")
        ),
        "declare payment's delay queue": lambda: stock.declare_queue(
            "sagawire.payment.commands.delay.100"
        ),
    }
    for what, attempt in refusals.items():
        with pytest.raises(AccessRefused, match="ACCESS_REFUSED"):  # noqa: PT012 - names `what`
            await attempt()
            pytest.fail(f"the stock user could {what}")

    connection = await aio_pika.connect(users[0])
    try:
        channel = await connection.channel()
        own = await channel.get_queue(command_queue("stock"), ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await own.bind(COMMANDS_EXCHANGE, "payment.*")  # a copy of payment's commands
    finally:
        await connection.close()

    # Nothing reached payment, and the participant's connection still works after the refusals.
    assert await collect(daemon, command_queue("payment"), within=0.3) == []
    calls: Counter[str] = Counter()
    async with stock_service(calls).serve(stock):
        await daemon.publish(COMMANDS_EXCHANGE, "stock.reserve", command("reserve", "o-6"))
        [reply] = await collect(daemon, reply_queue("stock"), expect=1, within=10)
    assert reply.correlation_id == "o-6"
    assert await collect(daemon, reply_queue("payment"), within=0.1) == []


async def _never(delivery: object) -> None:
    raise AssertionError(f"delivered: {delivery}")


@pytest.mark.asyncio
async def test_a_participant_user_waits_for_the_daemon_to_declare_its_queues(users):
    broker = await RabbitBroker.connect(users[0])
    try:
        with pytest.raises(AccessRefused, match="start the orchestrator daemon first"):
            async with stock_service(Counter()).serve(broker):
                pass
    finally:
        await broker.close()
