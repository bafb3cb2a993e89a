"""The actor runtime: rehydration, crashes, conflicts, timers, outbox.

Every test runs twice: on the memory adapters and on a real RabbitMQ and MongoDB (see conftest).
"""

from __future__ import annotations

import asyncio

import pytest
from runtime_support import order, scripted, serve_shop

from orchestrator.core.saga import SagaStatus
from orchestrator.demo.participants import FaultPlan, Ledger
from orchestrator.runtime.system import SWEEP_SHARE, ActorSystem, RuntimeSettings
from orchestrator.testing import SagaHarness, ScriptedService
from participants_sdk import protocol

pytestmark = pytest.mark.asyncio

STEPS = [
    ("payment", "payment_executed", {"payment_id": "p-1"}),
    ("stock", "order_prepared", {"reservation_id": "r-1"}),
    ("delivery", "order_delivered", {"tracking_id": "t-1"}),
]


def events(saga, kind: str) -> list[tuple[str | None, int | None]]:
    return [(h.step, h.attempt) for h in saga.history if h.event == kind]


async def test_order_saga_succeeds(harness: SagaHarness, shop: tuple[FaultPlan, Ledger]) -> None:
    _, ledger = shop
    await harness.start("order", order("o-1"), "o-1")
    await harness.drain()
    saga = await harness.saga("o-1")
    assert saga.status is SagaStatus.SUCCEEDED
    assert saga.label == "DELIVERED"
    assert sorted(ledger.applied) == [
        "o-1:deliver_order:1",
        "o-1:execute_payment:1",
        "o-1:prepare_order:1",
    ]
    assert set(ledger.applied.values()) == {1}
    assert saga.outbox == []


async def test_business_failure_compensates_in_reverse(
    harness: SagaHarness, shop: tuple[FaultPlan, Ledger]
) -> None:
    plan, ledger = shop
    plan.failures["o-2"] = "delivery"
    await harness.start("order", order("o-2"), "o-2")
    await harness.drain()
    saga = await harness.saga("o-2")
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.compensation is not None
    assert saga.compensation.done == ["prepare_order", "execute_payment"]
    assert ledger.applied["o-2:compensate:prepare_order:1"] == 1
    assert ledger.applied["o-2:compensate:execute_payment:1"] == 1
    assert "o-2:deliver_order:1" not in ledger.applied


async def test_resumes_after_passivation(make_harness) -> None:
    settings = RuntimeSettings(passivate_after=5.0, sweep_interval=60.0)
    async with make_harness(settings=settings) as h:
        services = await scripted(h)
        await h.start("order", order("o-3"), "o-3")
        for name, event, payload in STEPS:
            command = await services[name].next_command()
            await h.advance(6.0)
            h.system.passivate_idle()
            assert h.system.live_actors == 0
            await services[name].reply(command, event, payload)
            await h.drain()
        saga = await h.saga("o-3")
        assert saga.status is SagaStatus.SUCCEEDED
        assert [step for step, _ in events(saga, "replied")] == [
            "execute_payment",
            "prepare_order",
            "deliver_order",
        ]
        assert h.system.stats.passivated >= 3


@pytest.mark.parametrize("crash_at", range(3))
@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 8, 13])
async def test_crash_and_rebuild_between_steps(
    harness: SagaHarness, manual: dict[str, ScriptedService], crash_at: int, yields: int
) -> None:
    """A crash at any point around a reply: the saga still finishes, each step applied once."""
    await harness.start("order", order("o-4"), "o-4")
    for index, (name, event, payload) in enumerate(STEPS):
        command = await manual[name].next_command()
        await manual[name].reply(command, event, payload)
        if index == crash_at:
            for _ in range(yields):
                await asyncio.sleep(0)
            await harness.crash()
            await harness.rebuild()
        await harness.drain()
    saga = await harness.saga("o-4")
    assert saga.status is SagaStatus.SUCCEEDED
    assert [step for step, _ in events(saga, "replied")] == [
        "execute_payment",
        "prepare_order",
        "deliver_order",
    ]
    assert [step for step, _ in events(saga, "command_sent")] == [
        "execute_payment",
        "prepare_order",
        "deliver_order",
    ]
    for service in manual.values():
        assert manual["payment"].inbox.empty()
        assert len(set(service.seen_keys)) == 1


async def test_concurrent_writer_conflict_loses_nothing(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    await harness.start("order", order("o-5"), "o-5")
    command = await manual["payment"].next_command()
    # Another writer (an operator tool, another replica) saves the saga behind the actor's back.
    other = await harness.saga("o-5")
    other.data["note"] = "written elsewhere"
    await harness.store.save(other)
    await manual["payment"].reply(command, "payment_executed", {"payment_id": "p-5"})
    await harness.drain()
    saga = await harness.saga("o-5")
    assert harness.system.stats.conflicts == 1
    assert saga.data["note"] == "written elsewhere"
    assert saga.data["payment"] == {"payment_id": "p-5"}
    assert saga.state == "prepare_order"
    assert events(saga, "replied") == [("execute_payment", 1)]
    assert events(saga, "command_sent") == [("execute_payment", 1), ("prepare_order", 1)]


async def test_two_replicas_on_the_same_queues(make_harness, registry) -> None:
    async with make_harness() as h:
        plan, ledger = await serve_shop(h)

        second = ActorSystem(
            registry, h.store, await h.connect(), clock=h.clock, settings=h.settings
        )
        await second.start()
        client = await h.connect()
        for i in range(60):
            if i % 5 == 0:
                plan.failures[f"r-{i}"] = ("payment", "stock", "delivery")[i % 3]
            start = protocol.WireMessage.json(
                type="start",
                payload={"machine": "order", "saga_id": f"r-{i}", "data": order(f"r-{i}")},
            )
            await client.publish(protocol.CONTROL_EXCHANGE, protocol.CONTROL_ROUTING_KEY, start)
        await h.drain(also=[second])
        sagas = await h.sagas()
        assert len(sagas) == 60
        for saga in sagas:
            expected = (
                SagaStatus.COMPENSATED if saga.saga_id in plan.failures else SagaStatus.SUCCEEDED
            )
            assert saga.status is expected, saga.saga_id
        assert ledger.applied_twice == 0
        assert h.system.stats.decisions["applied"] > 0
        assert second.stats.decisions["applied"] > 0
        await second.stop()


async def test_due_timer_fires_once_after_rebuild(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    await harness.start("order", order("o-6"), "o-6")
    first = await manual["payment"].next_command()
    assert first.headers[protocol.H_ATTEMPT] == 1
    await harness.crash()
    await harness.clock.advance(31)  # past the 30 s timeout while no runtime is running
    await harness.rebuild()
    await harness.drain()
    saga = await harness.saga("o-6")
    assert events(saga, "timed_out") == [("execute_payment", 1)]
    assert saga.pending[0].waiting == "backoff"
    for _ in range(4):  # the 2 s backoff passes; sweeps and timers both look
        await harness.advance(1.0)
    retry = await manual["payment"].next_command()
    assert retry.headers[protocol.H_ATTEMPT] == 2
    assert retry.headers[protocol.H_IDEMPOTENCY_KEY] == "o-6:execute_payment:1"
    for _ in range(5):
        await harness.advance(1.0)
    assert manual["payment"].inbox.empty()
    saga = await harness.saga("o-6")
    assert events(saga, "timed_out") == [("execute_payment", 1)]
    assert events(saga, "retrying") == [("execute_payment", 2)]


async def test_commands_stored_but_not_published_go_out_after_crash(
    harness: SagaHarness, manual: dict[str, ScriptedService], monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = harness.system.broker
    publish = connection.publish

    async def broken_publish(exchange, routing_key, message) -> None:
        # Commands fail to go out, as on a dropped connection; the crash below replaces it.
        if exchange == protocol.COMMANDS_EXCHANGE:
            raise ConnectionError("connection lost")
        await publish(exchange, routing_key, message)

    monkeypatch.setattr(connection, "publish", broken_publish)
    with pytest.raises(ConnectionError):
        await harness.start("order", order("o-7"), "o-7")
    stored = await harness.saga("o-7")
    assert [c.step for c in stored.outbox] == ["execute_payment"]
    assert manual["payment"].inbox.empty()
    await harness.crash()
    await harness.rebuild()
    await harness.drain()
    command = await manual["payment"].next_command()
    assert command.message_id == "o-7:execute_payment:1:1"
    assert (await harness.saga("o-7")).outbox == []
    assert harness.system.stats.recovered_outboxes == 1
    await manual["payment"].reply(command, "payment_executed", {"payment_id": "p-7"})
    await harness.drain()
    assert (await harness.saga("o-7")).state == "prepare_order"


async def test_live_actor_cap_applies_backpressure(make_harness) -> None:
    settings = RuntimeSettings(max_live_actors=3, sweep_interval=60.0)
    async with make_harness(settings=settings) as h:
        await serve_shop(h)
        most = 0

        def watch(_decision, _saga) -> None:
            nonlocal most
            most = max(most, h.system.live_actors)

        h.system.listeners.append(watch)
        client = await h.connect()
        for i in range(40):
            start = protocol.WireMessage.json(
                type="start",
                payload={"machine": "order", "saga_id": f"b-{i}", "data": order(f"b-{i}")},
            )
            await client.publish(protocol.CONTROL_EXCHANGE, protocol.CONTROL_ROUTING_KEY, start)
        await h.drain()
        sagas = await h.sagas()
        assert all(s.status is SagaStatus.SUCCEEDED for s in sagas)
        assert len(sagas) == 40
        assert 0 < most <= 3
        assert h.system.stats.backpressure_waits > 0


async def test_running_saga_keeps_its_machine_version(harness, manual, registry) -> None:
    from orchestrator.core.definition import MachineDefinition  # noqa: PLC0415
    from orchestrator.core.machines import MachineRegistry  # noqa: PLC0415

    await harness.start("order", order("o-8"), "o-8")
    command = await manual["payment"].next_command()
    v1 = registry.get("order", 1)
    snapshot = v1.snapshot()
    snapshot["version"] = 2
    snapshot["states"]["execute_payment"]["on"]["payment_executed"] = {
        "goto": "delivered",
        "save_as": "payment",
    }
    del snapshot["states"]["prepare_order"], snapshot["states"]["deliver_order"]
    v2 = MachineDefinition.model_validate(snapshot)
    await harness.crash()
    harness.registry = MachineRegistry([*registry, v2])
    await harness.rebuild()
    await manual["payment"].reply(command, "payment_executed", {"payment_id": "p-8"})
    await harness.drain()
    old = await harness.saga("o-8")
    assert (old.machine_version, old.state) == (1, "prepare_order")
    await harness.start("order", order("o-9"), "o-9")
    new_command = await manual["payment"].next_command()
    assert new_command.headers[protocol.H_VERSION] == 2
    await manual["payment"].reply(new_command, "payment_executed", {"payment_id": "p-9"})
    await harness.drain()
    new = await harness.saga("o-9")
    assert (new.machine_version, new.status) == (2, SagaStatus.SUCCEEDED)


async def test_a_paused_machine_refuses_new_sagas_while_running_ones_go_on(make_harness) -> None:
    from orchestrator.core.pauses import MachinePaused  # noqa: PLC0415

    settings = RuntimeSettings(sweep_interval=60.0, pauses_read_every=0.0)
    async with make_harness(settings=settings) as h:
        services = await scripted(h)
        await h.start("order", order("p-1"), "p-1")
        command = await services["payment"].next_command()
        await h.store.pause_machine("order", by="alice", reason="payment outage")

        with pytest.raises(
            MachinePaused, match=r"machine 'order' is paused \(by alice at .*: payment outage\)"
        ):
            await h.start("order", order("p-2"), "p-2")
        await services["payment"].reply(command, "payment_executed", {"payment_id": "p-1"})
        await h.drain()
        assert (await h.saga("p-1")).state == "prepare_order"  # the running saga went on
        assert {s.saga_id for s in await h.sagas()} == {"p-1"}

        assert await h.store.resume_machine("order")
        await h.start("order", order("p-2"), "p-2")
        assert (await h.saga("p-2")).state == "execute_payment"


class SlowRecoveryStore:
    """The harness's store, but `with_outbox` waits until `opened` is set, as a recovery query
    does on a database that scans every saga document for it."""

    def __init__(self, store) -> None:
        self._store = store
        self.asked = asyncio.Event()
        self.opened = asyncio.Event()

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def with_outbox(self, limit: int, **options) -> list[str]:
        self.asked.set()
        await self.opened.wait()
        return await self._store.with_outbox(limit, **options)


async def test_a_restarted_runtime_consumes_replies_while_it_recovers(
    harness: SagaHarness, manual: dict[str, ScriptedService], registry
) -> None:
    await harness.start("order", order("o-11"), "o-11")
    command = await manual["payment"].next_command()
    await harness.crash()
    # Answered while no runtime runs: the reply waits in the queue.
    await manual["payment"].reply(command, "payment_executed", {"payment_id": "p-11"})
    store = SlowRecoveryStore(harness.store)
    connection = await harness.connect()
    system = ActorSystem(
        registry, store, connection, clock=harness.clock, settings=harness.settings
    )
    starting = asyncio.create_task(system.start())
    try:
        await asyncio.wait_for(store.asked.wait(), timeout=5)
        for _ in range(1000):  # up to 10 s
            if (await harness.store.load("o-11")).state == "prepare_order":
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the waiting reply was not applied while recovery ran")
        assert not starting.done()
        assert system.ready  # serving, so ready, while it recovers
        store.opened.set()
        await asyncio.wait_for(starting, timeout=10)
        assert system.ready
    finally:
        store.opened.set()
        await starting
        await system.stop()
        await connection.close()


async def test_a_slow_sweep_spaces_out_the_next_ones(make_harness) -> None:
    async with make_harness(settings=RuntimeSettings(sweep_interval=5.0)) as h:
        store, clock = h.system.store, h.clock
        sweeps: list[float] = []
        takes = {"seconds": 0.0}
        due = store.due

        async def timed_due(now, limit):  # the store's own, taking `takes` seconds
            sweeps.append(clock.monotonic())
            await clock.advance(takes["seconds"])
            return await due(now, limit)

        store.due = timed_due
        await h.advance(0.0)  # the sweeper's task starts and waits for its first turn
        for _ in range(3):  # quick sweeps: one every `sweep_interval`
            await h.advance(5.0)
        assert len(sweeps) == 3
        assert sweeps[2] - sweeps[1] == pytest.approx(5.0)

        takes["seconds"] = 2.0  # a slow one: the next waits 2 / SWEEP_SHARE = 40 s after it
        await h.advance(5.0)
        assert len(sweeps) == 4
        assert h.system.stats.sweep_seconds == pytest.approx(2.0)
        takes["seconds"] = 0.0
        await h.advance(35.0)
        assert len(sweeps) == 4
        await h.advance(6.0)
        assert len(sweeps) == 5
        assert sweeps[4] - sweeps[3] >= 2.0 + 2.0 / SWEEP_SHARE
        await h.advance(5.0)  # quick again: back to `sweep_interval`
        assert len(sweeps) == 6
