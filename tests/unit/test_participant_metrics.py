"""A participant's counts by command (`Participant.stats`) and their Prometheus collector."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel

import participants_sdk.participant as participant_module
from participants_sdk import CommandContext, MemoryBroker, Participant, Reject, RetryLater
from participants_sdk.prometheus import COUNTERS, HANDLER_SECONDS, ParticipantCollector
from participants_sdk.protocol import (
    COMMANDS_EXCHANGE,
    H_ATTEMPT,
    H_IDEMPOTENCY_KEY,
    H_MACHINE,
    H_STEP,
    H_VERSION,
    H_VISIT,
    WireMessage,
)
from participants_sdk.stats import UNKNOWN, Histogram


class Pay(BaseModel):
    amount: float


class Paid(BaseModel):
    payment_id: str


class Refund(BaseModel):
    payment_id: str


class Refunded(BaseModel):
    pass


def command(name: str, body: dict, *, key: str, attempt: int = 1) -> WireMessage:
    return WireMessage.json(
        type=name,
        payload=body,
        correlation_id="saga-1",
        headers={
            H_MACHINE: "order",
            H_VERSION: 1,
            H_STEP: "execute_payment",
            H_VISIT: 1,
            H_ATTEMPT: attempt,
            H_IDEMPOTENCY_KEY: key,
        },
    )


def payments(**options: float) -> Participant:
    """Pays up to 1000 (more is rejected), always fails for 13, asks to retry 7 once; refunds."""
    participant = Participant("payment", retry_backoff=0.0, max_retry_backoff=0.0, **options)
    limited: set[str] = set()

    @participant.command_handler("execute_payment")
    async def pay(cmd: Pay, ctx: CommandContext) -> Paid:
        if cmd.amount > 1000:
            raise Reject("payment_failed", reason="over limit")
        if cmd.amount == 13:
            raise ConnectionError("bank unavailable")
        if cmd.amount == 7 and ctx.idempotency_key not in limited:
            limited.add(ctx.idempotency_key)
            raise RetryLater(0.0, reason="rate limited")
        return Paid(payment_id="p-1")

    @participant.command_handler("refund_payment")
    async def refund(cmd: Refund, ctx: CommandContext) -> Refunded:
        return Refunded()

    return participant


async def run(participant: Participant, *messages: WireMessage) -> MemoryBroker:
    broker = MemoryBroker()
    connection = broker.connect()
    async with participant.serve(connection):
        for message in messages:  # one at a time: the handlers run in the order given
            await connection.publish(COMMANDS_EXCHANGE, f"payment.{message.type}", message)
            await broker.wait_idle()
    return broker


@pytest.mark.asyncio
async def test_each_outcome_is_counted_under_its_command() -> None:
    participant = payments(max_retries=2)
    await run(
        participant,
        command("execute_payment", {"amount": 10}, key="k-1"),
        command("execute_payment", {"amount": 10}, key="k-1", attempt=2),  # a duplicate
        command("execute_payment", {"amount": 5000}, key="k-2"),  # rejected
        command("execute_payment", {"amount": 7}, key="k-3"),  # retried once, then paid
        command("execute_payment", {"amount": 13}, key="k-4"),  # retried twice, dead-lettered
        command("execute_payment", {"amount": "lots"}, key="k-5"),  # invalid: dead-lettered
        command("refund_payment", {"payment_id": "p-1"}, key="k-6"),
    )
    stats = participant.stats
    assert stats.handled == {"execute_payment": 1 + 1 + 2 + 3, "refund_payment": 1}
    assert stats.rejected == {"execute_payment": 1}
    assert stats.duplicates == {"execute_payment": 1}
    assert stats.retried == {"execute_payment": 1 + 2}
    assert stats.dead_lettered == {"execute_payment": 2}
    assert stats.requeued == {}
    assert {name: h.count for name, h in stats.handler_seconds.items()} == stats.handled
    assert (participant.handled, participant.duplicates) == (8, 1)


@pytest.mark.asyncio
async def test_a_command_without_a_handler_is_counted_as_unknown() -> None:
    participant = payments()
    await run(participant, command("command_from_the_wire", {}, key="k-1"))
    assert participant.stats.dead_lettered == {UNKNOWN: 1}
    assert participant.stats.handled == {}


class _Unconfirmed:
    async def publish(self, exchange: str, routing_key: str, message: WireMessage) -> None:
        raise ConnectionError("no confirm")


@dataclasses.dataclass
class _Delivery:
    message: WireMessage
    queue: str = "sagawire.payment.commands"
    redelivered: bool = False
    settled: str | None = None

    async def ack(self) -> None:
        self.settled = "ack"

    async def requeue(self) -> None:
        self.settled = "requeue"

    async def dead_letter(self, reason: str) -> None:
        self.settled = "dead_letter"

    async def retry_later(self, delay: float, headers: dict[str, object]) -> None:
        self.settled = "retry_later"


@pytest.mark.asyncio
async def test_a_reply_the_broker_did_not_confirm_is_counted_as_requeued() -> None:
    participant = payments()
    delivery = _Delivery(command("execute_payment", {"amount": 10}, key="k-1"))
    await participant.handle(delivery, _Unconfirmed())
    assert delivery.settled == "requeue"
    assert participant.stats.requeued == {"execute_payment": 1}


class _Clock:
    """Stands in for the `time` module in `participants_sdk.participant`: each handler run
    takes the next of `durations`."""

    def __init__(self, *durations: float) -> None:
        readings = itertools.accumulate(d for duration in durations for d in (duration, 0.0))
        self._readings = iter([0.0, *readings])

    def perf_counter(self) -> float:
        return next(self._readings)


@pytest.mark.asyncio
async def test_handler_durations_fall_in_their_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(participant_module, "time", _Clock(0.004, 0.3))
    participant = payments()
    await run(
        participant,
        command("execute_payment", {"amount": 10}, key="k-1"),
        command("execute_payment", {"amount": 5000}, key="k-2"),
    )
    histogram = participant.stats.handler_seconds["execute_payment"]
    assert histogram.count == 2
    assert histogram.total == pytest.approx(0.304)
    cumulative = dict(histogram.cumulative())
    assert (cumulative["0.0025"], cumulative["0.005"], cumulative["0.25"]) == (0, 1, 1)
    assert (cumulative["0.5"], cumulative["+Inf"]) == (2, 2)


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def of(command: str, service: str = "payment") -> frozenset:
    return frozenset({("service", service), ("command", command)})


@pytest.mark.asyncio
async def test_the_collector_exports_every_registered_command_and_only_those() -> None:
    participant = payments(max_retries=0)
    stock = Participant("stock")

    @stock.command_handler("prepare_order")
    async def prepare(cmd: Refund, ctx: CommandContext) -> Refunded:
        return Refunded()

    registry = CollectorRegistry()
    registry.register(ParticipantCollector(participant, stock))
    before = samples(registry)
    # Every registered command from the start, at 0.
    assert before[("sagawire_participant_handled_total", of("refund_payment"))] == 0
    assert before[("sagawire_participant_handled_total", of("prepare_order", "stock"))] == 0
    assert before[(f"{HANDLER_SECONDS}_count", of("execute_payment"))] == 0

    await run(
        participant,
        command("execute_payment", {"amount": 10}, key="k-1"),
        command("execute_payment", {"amount": 5000}, key="k-2"),
        command("execute_payment", {"amount": 13}, key="k-3"),  # dead-lettered at once
        command("command_from_the_wire", {}, key="k-4"),
    )
    after = samples(registry)
    assert after[("sagawire_participant_handled_total", of("execute_payment"))] == 3
    assert after[("sagawire_participant_rejected_total", of("execute_payment"))] == 1
    assert after[("sagawire_participant_dead_lettered_total", of("execute_payment"))] == 1
    assert after[("sagawire_participant_dead_lettered_total", of(UNKNOWN))] == 1
    assert after[(f"{HANDLER_SECONDS}_count", of("execute_payment"))] == 3
    assert (f"{HANDLER_SECONDS}_bucket", of("execute_payment") | {("le", "+Inf")}) in after
    commands = {dict(labels)["command"] for _, labels in after}
    assert commands == {"execute_payment", "refund_payment", "prepare_order", UNKNOWN}
    names = {name.removesuffix("_total") for name, _ in after}
    assert {name for _, name, _ in COUNTERS} <= names


def test_participants_of_one_service_cannot_share_a_collector() -> None:
    with pytest.raises(ValueError, match="share their series"):
        ParticipantCollector(payments(), payments())


def test_an_empty_histogram_has_every_bucket_at_zero() -> None:
    cumulative = Histogram((0.1, 1.0)).cumulative()
    assert cumulative == [("0.1", 0), ("1.0", 0), ("+Inf", 0)]
