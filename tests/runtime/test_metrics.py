"""The daemon's /metrics by machine, step and service: what sagas did, and nothing a message named.

Every harness test runs on the memory adapters and on a real RabbitMQ and MongoDB (conftest).
The manual clock makes each step's latency exactly the time the test lets pass before replying.
"""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client.parser import text_string_to_metric_families
from runtime_support import order

from orchestrator.daemon.metrics import metrics_registry, render
from orchestrator.runtime.actor import UnknownSaga
from orchestrator.runtime.deliveries import Deliveries
from orchestrator.runtime.stats import RuntimeStats
from orchestrator.testing import SagaHarness, ScriptedService
from participants_sdk import protocol

pytestmark = pytest.mark.asyncio

Labels = frozenset[tuple[str, str]]

STEPS = [
    # service, step, reply event, its payload, seconds before the reply
    ("payment", "execute_payment", "payment_executed", {"payment_id": "p-1"}, 0.004),
    ("stock", "prepare_order", "order_prepared", {"reservation_id": "r-1"}, 0.3),
    ("delivery", "deliver_order", "order_delivered", {"tracking_id": "t-1"}, 2.0),
]
UNDO = [
    ("stock", "compensate:prepare_order", "stock_released", 0.02),
    ("payment", "compensate:execute_payment", "payment_refunded", 0.02),
]


def labels(**values: str) -> Labels:
    return frozenset(values.items())


def exposition(harness: SagaHarness) -> str:
    return render(metrics_registry(harness.system)).decode()


def samples(text: str, name: str) -> dict[Labels, float]:
    """The samples called `name`, by their labels."""
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def label_values(text: str) -> set[str]:
    """Every label value of Sagawire's own samples, but the histograms' bucket bounds."""
    return {
        value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("sagawire_")
        for sample in family.samples
        for label, value in sample.labels.items()
        if label != "le"
    }


async def run_order(
    harness: SagaHarness, services: dict[str, ScriptedService], saga_id: str, *, deliver: bool
) -> None:
    """One order saga, each participant replying after its step's time; delivery fails unless
    `deliver`, and the two steps done are compensated."""
    await harness.start("order", order(saga_id), saga_id)
    for service, _, event, payload, took in STEPS:
        command = await services[service].next_command()
        await harness.advance(took)
        if service == "delivery" and not deliver:
            await services[service].reply(command, "delivery_failed", rejected=True)
            await harness.drain()
            break
        await services[service].reply(command, event, payload)
        await harness.drain()
    else:
        return
    for service, _, event, took in UNDO:
        command = await services[service].next_command()
        await harness.advance(took)
        await services[service].reply(command, event, {})
        await harness.drain()


async def test_step_latency_is_shown_by_machine_and_step(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    for saga_id, deliver in [("o-1", True), ("o-2", True), ("o-3", False)]:
        await run_order(harness, manual, saga_id, deliver=deliver)

    text = exposition(harness)
    for step, bound, observed in [
        ("execute_payment", "0.0025", 0),
        ("execute_payment", "0.005", 3),
        ("execute_payment", "+Inf", 3),
        ("prepare_order", "0.25", 0),
        ("prepare_order", "0.5", 3),
        ("deliver_order", "1.0", 0),
        ("deliver_order", "2.5", 3),
    ]:
        line = (
            f'sagawire_step_latency_seconds_bucket{{le="{bound}",machine="order",step="{step}"}} '
            f"{observed}.0"
        )
        assert line in text.splitlines()

    counts = samples(text, "sagawire_step_latency_seconds_count")
    assert counts == {
        labels(machine="order", step="execute_payment"): 3,
        labels(machine="order", step="prepare_order"): 3,
        labels(machine="order", step="deliver_order"): 3,
        labels(machine="order", step="compensate:prepare_order"): 1,
        labels(machine="order", step="compensate:execute_payment"): 1,
    }
    sums = samples(text, "sagawire_step_latency_seconds_sum")
    assert sums[labels(machine="order", step="execute_payment")] == pytest.approx(3 * 0.004)
    assert sums[labels(machine="order", step="deliver_order")] == pytest.approx(3 * 2.0)
    assert sums[labels(machine="order", step="compensate:prepare_order")] == pytest.approx(0.02)

    assert samples(text, "sagawire_sagas_finished_total") == {
        labels(machine="order", outcome="succeeded"): 2,
        labels(machine="order", outcome="compensated"): 1,
    }
    assert samples(text, "sagawire_saga_duration_seconds_count") == {labels(machine="order"): 3}
    durations = samples(text, "sagawire_saga_duration_seconds_sum")
    assert durations[labels(machine="order")] == pytest.approx(3 * 2.304 + 2 * 0.02)
    assert samples(text, "sagawire_commands_published_total") == {
        labels(machine="order", service="payment"): 4,  # three payments, one refund
        labels(machine="order", service="stock"): 4,
        labels(machine="order", service="delivery"): 3,
    }
    assert samples(text, "sagawire_step_timeouts_total") == {}


async def test_timeouts_and_retries_are_counted_by_machine_and_step(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    await harness.start("order", order("o-1"), "o-1")
    first = await manual["payment"].next_command()
    await harness.advance(31.0)  # past the 30 s timeout: attempt 2 is due 2 s later
    await harness.advance(2.0)
    second = await manual["payment"].next_command()
    assert (first.headers[protocol.H_ATTEMPT], second.headers[protocol.H_ATTEMPT]) == (1, 2)

    text = exposition(harness)
    step = labels(machine="order", step="execute_payment")
    assert samples(text, "sagawire_step_timeouts_total") == {step: 1}
    assert samples(text, "sagawire_step_retries_total") == {step: 1}
    assert samples(text, "sagawire_timer_fires_total")[labels()] >= 2
    assert samples(text, "sagawire_timers_armed")[labels()] == 1  # attempt 2's deadline


async def test_a_reply_naming_what_no_machine_defines_adds_no_label_value(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    await harness.start("order", order("o-1"), "o-1")
    command = await manual["payment"].next_command()
    before = label_values(exposition(harness))

    payment = manual["payment"]
    no_step = command.with_headers(**{protocol.H_STEP: "step_from_the_wire"})
    await payment.reply(no_step, "payment_executed", {"payment_id": "p-1"})
    no_machine = command.with_headers(**{protocol.H_MACHINE: "machine_from_the_wire"})
    await payment.reply(no_machine, "payment_executed", {"payment_id": "p-1"})
    # On payment's reply queue, naming a service the daemon never declared.
    intruder = protocol.WireMessage.json(
        type="event_from_the_wire",
        payload={},
        correlation_id="o-1",
        headers={**command.headers, protocol.H_SERVICE: "service_from_the_wire"},
    )
    assert payment.connection is not None
    await payment.connection.publish(protocol.REPLIES_EXCHANGE, "payment", intruder)
    await harness.drain()

    text = exposition(harness)
    assert samples(text, "sagawire_dead_lettered_total") == {
        labels(kind="invalid", service="payment"): 2,
        labels(kind="invalid_message", service="payment"): 1,
    }
    # The only new values are the dead letters' kinds, which the code names.
    assert label_values(text) - before == {"invalid", "invalid_message"}
    assert not any("from_the_wire" in value for value in label_values(text))


@dataclasses.dataclass
class _Reply:
    message: protocol.WireMessage
    queue: str
    redelivered: bool = False
    settled: str | None = None

    async def ack(self) -> None:
        self.settled = "ack"

    async def requeue(self) -> None:
        self.settled = "requeue"

    async def dead_letter(self, reason: str) -> None:
        self.settled = "dead_letter"

    async def retry_later(self, delay: float, headers: dict[str, object]) -> None:
        raise AssertionError("the runtime never delays a delivery")


async def test_a_dead_letter_from_a_queue_of_no_declared_service_counts_as_unknown() -> None:
    async def tell(saga_id: str, message: object) -> None:
        raise UnknownSaga(saga_id)

    # A reply consistent in itself (header, routing key and queue agree) from a service no
    # machine names: its name stays out of the labels.
    reply = protocol.WireMessage.json(
        type="done",
        payload={},
        correlation_id="s-1",
        headers={
            protocol.H_SERVICE: "intruder",
            protocol.H_STEP: "s",
            protocol.H_VISIT: 1,
            protocol.H_ATTEMPT: 1,
            protocol.H_MACHINE: "order",
        },
    ).routed(protocol.REPLIES_EXCHANGE, "intruder")
    stats = RuntimeStats()
    delivery = _Reply(reply, queue=protocol.reply_queue("intruder"))
    await Deliveries(tell, stats, services=["payment"]).on_reply(delivery)
    assert delivery.settled == "dead_letter"
    assert stats.dead_lettered == {("unknown_saga", "unknown"): 1}
