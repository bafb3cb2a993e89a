"""`sagawire sagas retry|abort|resume` against a daemon (the harness's runtime) on real servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
from typer.testing import CliRunner

from orchestrator.cli import commands  # noqa: F401 - registers the sub-commands
from orchestrator.cli.app import app
from orchestrator.core.machines import load_machines
from orchestrator.core.saga import SagaStatus
from orchestrator.demo.participants import example_order as order
from orchestrator.runtime.clock import ManualClock
from orchestrator.runtime.system import RuntimeSettings
from orchestrator.testing import SagaHarness, ScriptedService
from orchestrator.testing.backends import RabbitMongoBackend
from tests.services import own_vhost, with_database

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo, pytest.mark.asyncio]

REPO = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture
async def shop(urls):
    """A daemon whose clock stands an hour behind the wall clock (so a waiting saga's deadline
    has passed for `--stuck`, while its timers never fire), and the services played by hand."""
    with own_vhost(urls, f"sagawire_ops_{uuid.uuid4().hex[:8]}", REPO) as amqp_url:
        backend = RabbitMongoBackend(amqp_url, urls.mongodb)
        clock = ManualClock(dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1))
        registry = load_machines(REPO / "machines")
        settings = RuntimeSettings(sweep_interval=1.0, passivate_after=30.0, pauses_read_every=0.0)
        async with SagaHarness(registry, backend=backend, clock=clock, settings=settings) as h:
            services = {}
            for name in ("payment", "stock", "delivery"):
                services[name] = ScriptedService(h.connect, name)
                await services[name].start()
            urls_for_cli = (
                "--amqp-url",
                amqp_url,
                "--mongodb-url",
                with_database(urls.mongodb, backend.database),
            )
            yield h, services, urls_for_cli


async def sagawire(*args: str):
    """The CLI in a thread of its own (it runs its own event loop) while the daemon runs here."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), catch_exceptions=False)


async def paid_and_waiting_on_stock(h, services, saga_id: str):
    await h.start("order", order(saga_id), saga_id)
    payment = await services["payment"].next_command()
    await services["payment"].reply(payment, "payment_executed", {"payment_id": "p-1"})
    first = await services["stock"].next_command()  # and never answered: the saga is stuck
    await h.drain()
    return first


async def test_a_stuck_saga_is_found_retried_and_completes(shop):
    h, services, cli = shop
    first = await paid_and_waiting_on_stock(h, services, "s-1")

    listed = await sagawire("sagas", "list", "--stuck", "--json", *cli[2:])
    assert listed.exit_code == 0, listed.output
    assert [row["saga_id"] for row in json.loads(listed.stdout)["sagas"]] == ["s-1"]

    retried = await sagawire(
        "sagas", "retry", "s-1", "--operator", "alice", "--reason", "stock back", *cli
    )
    assert retried.exit_code == 0, retried.output
    assert retried.stdout.strip() == (
        "retry applied by alice: saga s-1 is running, state prepare_order; "
        "waiting on prepare_order attempt 2"
    )
    second = await services["stock"].next_command()
    assert (second.headers["x-sagawire-attempt"], second.headers["x-sagawire-idempotency-key"]) == (
        2,
        first.headers["x-sagawire-idempotency-key"],
    )
    await services["stock"].reply(second, "order_prepared", {"reservation_id": "r-1"})
    delivery = await services["delivery"].next_command()
    await services["delivery"].reply(delivery, "order_delivered", {"tracking_id": "t-1"})
    await h.drain()

    saga = await h.saga("s-1")
    assert saga.status is SagaStatus.SUCCEEDED
    [entry] = [e for e in saga.history if e.event == "retry_requested"]
    assert (entry.by, entry.detail, entry.attempt) == ("alice", "stock back", 2)
    listed = await sagawire("sagas", "list", "--stuck", "--json", *cli[2:])
    assert json.loads(listed.stdout)["total"] == 0

    refused = await sagawire("sagas", "retry", "s-1", "--operator", "alice", *cli)
    assert refused.exit_code == 1
    assert "retry: refused: saga is succeeded" in refused.stderr


async def test_abort_with_compensate_runs_the_compensations(shop):
    h, services, cli = shop
    await paid_and_waiting_on_stock(h, services, "s-2")

    aborted = await sagawire("sagas", "abort", "s-2", "--compensate", "--operator", "bob", *cli)
    assert aborted.exit_code == 0, aborted.output
    assert "abort applied by bob: saga s-2 is compensating" in aborted.stdout
    # The stock command in flight may have taken effect: it is undone first, then the payment.
    release = await services["stock"].next_command()
    assert release.type == "release_stock"
    await services["stock"].reply(release, "stock_released", {"order_id": "s-2"})
    refund = await services["payment"].next_command()
    assert refund.type == "refund_payment"
    await services["payment"].reply(refund, "payment_refunded", {"order_id": "s-2"})
    await h.drain()

    saga = await h.saga("s-2")
    assert saga.status is SagaStatus.ABORTED
    assert saga.compensation is not None
    assert saga.compensation.done == ["prepare_order", "execute_payment"]
    assert [e.by for e in saga.history if e.event == "abort_requested"] == ["bob"]


async def test_unknown_sagas_and_a_missing_daemon_are_said_at_once(shop):
    h, services, cli = shop
    await paid_and_waiting_on_stock(h, services, "s-3")
    unknown = await sagawire("sagas", "resume", "nope", *cli)
    assert unknown.exit_code == 1
    assert "no saga 'nope'" in unknown.stderr
    nothing = await sagawire("sagas", "resume", "s-3", *cli)
    assert nothing.exit_code == 1
    assert "resume: refused: nothing to resume" in nothing.stderr

    await h.system.stop()  # the daemon stops consuming
    stopped = await sagawire("sagas", "retry", "s-3", "--wait", "60", *cli)
    assert stopped.exit_code == 1
    assert "no daemon is running: nothing consumes sagawire.control" in stopped.stderr


async def test_a_paused_machine_refuses_start_and_resumes(shop):
    h, _, cli = shop
    mongo = cli[2:]
    data = json.dumps(order("s-9"))
    machines = ("--machines", str(REPO / "machines"))
    paused = await sagawire(
        "machines",
        "pause",
        "order",
        "--reason",
        "stock outage",
        "--operator",
        "carol",
        *machines,
        *mongo,
    )
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.strip() == (
        "machine 'order' paused by carol: new sagas are refused, running ones go on"
    )
    refused = await sagawire(
        "start", "order", "--saga-id", "s-9", "--data", data, "--wait", "10", *cli
    )
    assert refused.exit_code == 1
    assert (
        "start of 's-9' refused: refused: machine 'order' is paused (by carol at" in refused.stderr
    )
    assert "stock outage" in refused.stderr
    assert await h.sagas() == []

    resumed = await sagawire("machines", "resume", "order", *machines, *mongo)
    assert (resumed.exit_code, resumed.stdout.strip()) == (
        0,
        "machine 'order' resumed: new sagas start again",
    )
    again = await sagawire("machines", "resume", "order", *machines, *mongo)
    assert again.exit_code == 1
    assert "machine 'order' is not paused" in again.stderr
    unknown = await sagawire("machines", "pause", "ordr", *machines, *mongo)
    assert unknown.exit_code == 1
    assert "unknown machine 'ordr'" in unknown.stderr

    started = await sagawire(
        "start", "order", "--saga-id", "s-9", "--data", data, "--wait", "10", *cli
    )
    assert (started.exit_code, started.stdout.strip()) == (0, "s-9"), started.output
    assert (await h.saga("s-9")).status is SagaStatus.RUNNING


async def test_start_wait_tells_a_repeat_from_a_start_with_other_data(shop):
    """`start --wait` again with the same data succeeds (nothing new happens); with other data
    it exits 1 naming the conflict, and the saga keeps the data it was started with."""
    h, _, cli = shop
    data = json.dumps(order("s-10"))
    first = await sagawire(
        "start", "order", "--saga-id", "s-10", "--data", data, "--wait", "10", *cli
    )
    assert (first.exit_code, first.stdout.strip()) == (0, "s-10"), first.output
    again = await sagawire(
        "start", "order", "--saga-id", "s-10", "--data", data, "--wait", "10", *cli
    )
    assert (again.exit_code, again.stdout.strip()) == (0, "s-10"), again.output

    other = json.dumps({**order("s-10"), "total": 1})
    refused = await sagawire(
        "start", "order", "--saga-id", "s-10", "--data", other, "--wait", "10", *cli
    )

    assert refused.exit_code == 1, refused.output
    assert "start of 's-10' refused: saga 's-10' exists with other data" in refused.stderr
    saga = await h.saga("s-10")
    assert saga.data["total"] == order("s-10")["total"]
    unstorable = await sagawire("start", "order", "--data", '{"a.b": 1}', *cli)
    assert unstorable.exit_code == 2
    assert "--data cannot be stored: $: key 'a.b' contains '.'" in unstorable.stderr
