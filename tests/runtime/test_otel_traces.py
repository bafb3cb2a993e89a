"""OpenTelemetry traces of sagas: one trace from the caller's span through the saga, each step
attempt, each compensation and each participant's handling, also across a daemon restart
between a command and its reply. On both backends (see conftest)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from runtime_support import order, serve_shop

from orchestrator.core.messages import OperatorRequest
from orchestrator.core.saga import SagaStatus
from orchestrator.demo.participants import FaultPlan
from orchestrator.testing import SagaHarness, ScriptedService
from orchestrator.tracing import parse_traceparent, saga_span_id, step_span_id
from participants_sdk import SagaClient, protocol
from tests.tracing_support import RecordedSpans, parent_id, recording, span_id, trace_id

pytestmark = pytest.mark.asyncio


@pytest.fixture
def spans():
    with recording() as recorded:
        yield recorded


@pytest_asyncio.fixture
async def plan(harness: SagaHarness, spans: RecordedSpans) -> FaultPlan:
    """The demo services, their spans recorded; a business failure where the plan says."""
    plan, _ = await serve_shop(harness)
    return plan


def handled(count: int) -> Callable[[list[ReadableSpan]], bool]:
    """Whether the participants have ended `count` spans."""
    return lambda spans: sum(span.kind is SpanKind.CONSUMER for span in spans) == count


def handler_of(spans: list[ReadableSpan], step: ReadableSpan) -> ReadableSpan:
    """The one participant span whose parent is `step`."""
    [handler] = [s for s in spans if s.kind is SpanKind.CONSUMER and parent_id(s) == span_id(step)]
    return handler


async def test_one_trace_from_the_callers_span_through_every_step_and_handler(
    harness: SagaHarness, plan: FaultPlan, spans: RecordedSpans
) -> None:
    client = SagaClient(await harness.connect())
    with spans.provider.get_tracer("checkout").start_as_current_span("checkout") as checkout:
        await client.start_saga("order", order("o-1"), saga_id="o-1")
    await harness.drain()
    assert (await harness.saga("o-1")).status is SagaStatus.SUCCEEDED
    recorded = await spans.wait_until(handled(3))

    caller = checkout.get_span_context()
    assert {trace_id(span) for span in recorded} == {caller.trace_id}
    saga = spans.one("saga order")
    assert parent_id(saga) == caller.span_id
    assert span_id(saga) == saga_span_id(caller.trace_id, "o-1")
    assert saga.attributes is not None
    assert saga.attributes["sagawire.saga.outcome"] == "succeeded"
    assert saga.status.status_code is StatusCode.UNSET

    expected = [
        ("execute_payment", "payment", "payment_executed"),
        ("prepare_order", "stock", "order_prepared"),
        ("deliver_order", "delivery", "order_delivered"),
    ]
    for step_name, service, event in expected:
        step = spans.one(f"saga order step {step_name}")
        assert step.kind is SpanKind.PRODUCER
        assert parent_id(step) == span_id(saga)
        assert span_id(step) == step_span_id(caller.trace_id, "o-1", step_name, 1, 1)
        assert {
            "sagawire.saga.id": "o-1",
            "sagawire.saga.machine": "order",
            "sagawire.saga.version": 1,
            "sagawire.step.name": step_name,
            "sagawire.step.phase": "action",
            "sagawire.step.visit": 1,
            "sagawire.step.attempt": 1,
            "sagawire.step.service": service,
            "sagawire.step.ended": "replied",
            "sagawire.reply.event": event,
            "sagawire.reply.rejected": False,
            "sagawire.step.timed_out": False,
        }.items() <= dict(step.attributes or {}).items()
        handler = handler_of(recorded, step)
        assert handler.name == f"{service} {step_name} process"
        assert handler.attributes is not None
        assert handler.attributes["sagawire.step.idempotency_key"] == f"o-1:{step_name}:1"
        assert handler.attributes["sagawire.step.attempt"] == 1
        assert handler.attributes["sagawire.reply.event"] == event
        assert handler.attributes["sagawire.duplicate"] is False
        assert handler.attributes["messaging.system"] == "rabbitmq"
        assert step.start_time is not None
        assert step.end_time is not None
        assert step.start_time <= step.end_time
    # The caller's span, the saga's, three steps', three handlers': nothing else, no orphan.
    assert len(recorded) == 1 + 1 + 3 + 3
    ids = {span_id(span) for span in recorded}
    assert all(parent_id(span) in ids for span in recorded if span.name != "checkout")


async def test_a_business_failure_shows_the_rejected_step_and_the_compensations(
    harness: SagaHarness, plan: FaultPlan, spans: RecordedSpans
) -> None:
    plan.failures["o-2"] = "delivery"
    client = SagaClient(await harness.connect())
    with spans.provider.get_tracer("checkout").start_as_current_span("checkout") as checkout:
        await client.start_saga("order", order("o-2"), saga_id="o-2")
    await harness.drain()
    assert (await harness.saga("o-2")).status is SagaStatus.COMPENSATED
    # Three steps and two compensations (release stock, refund payment), each handled once.
    recorded = await spans.wait_until(handled(5))

    caller = checkout.get_span_context()
    assert {trace_id(span) for span in recorded} == {caller.trace_id}
    saga = spans.one("saga order")
    assert parent_id(saga) == caller.span_id
    assert (saga.attributes or {})["sagawire.saga.outcome"] == "compensated"

    delivery = spans.one("saga order step deliver_order")
    assert (delivery.attributes or {})["sagawire.reply.event"] == "delivery_failed"
    assert (delivery.attributes or {})["sagawire.reply.rejected"] is True
    rejected = handler_of(recorded, delivery)
    assert (rejected.attributes or {})["sagawire.reply.rejected"] is True

    compensations = [
        ("prepare_order", "stock", "release_stock", "stock_released"),
        ("execute_payment", "payment", "refund_payment", "payment_refunded"),
    ]
    ends = []
    for action, service, command, event in compensations:
        compensation = spans.one(f"saga order compensation {action}")
        assert parent_id(compensation) == span_id(saga)
        assert span_id(compensation) == step_span_id(
            caller.trace_id, "o-2", f"compensate:{action}", 1, 1
        )
        attributes = compensation.attributes or {}
        assert attributes["sagawire.step.phase"] == "compensation"
        assert attributes["sagawire.step.command"] == command
        assert attributes["sagawire.reply.event"] == event
        handler = handler_of(recorded, compensation)
        assert handler.name == f"{service} {command} process"
        assert (handler.attributes or {})["sagawire.step.compensates"] == f"o-2:{action}:1"
        ends.append(compensation.end_time)
    assert ends == sorted(ends)  # newest step first: stock released before the refund


async def test_a_saga_started_without_a_trace_gets_one_with_the_saga_span_as_its_root(
    harness: SagaHarness, plan: FaultPlan, spans: RecordedSpans
) -> None:
    await harness.start("order", order("o-3"), "o-3")
    await harness.drain()
    stored = await harness.saga("o-3")
    assert stored.status is SagaStatus.SUCCEEDED
    recorded = await spans.wait_until(handled(3))

    context = parse_traceparent(stored.traceparent)
    assert context is not None
    saga = spans.one("saga order")
    assert saga.parent is None
    assert span_id(saga) == context.parent_id == saga_span_id(context.trace_id, "o-3")
    assert {trace_id(span) for span in recorded} == {context.trace_id}
    steps = [span for span in recorded if span.name.startswith("saga order step ")]
    assert len(steps) == 3
    assert all(parent_id(step) == span_id(saga) for step in steps)
    assert all(handler_of(recorded, step) for step in steps)


async def test_the_spans_of_a_step_outlive_a_restart_and_a_timeout(
    harness: SagaHarness, manual: dict[str, ScriptedService], spans: RecordedSpans
) -> None:
    client = SagaClient(await harness.connect())
    with spans.provider.get_tracer("checkout").start_as_current_span("checkout") as checkout:
        await client.start_saga("order", order("o-4"), saga_id="o-4")
    caller = checkout.get_span_context()
    first = await manual["payment"].next_command()
    sent = (await harness.saga("o-4")).pending[0].sent_at
    await harness.crash()  # the daemon goes between the command and its reply
    await harness.clock.advance(31)  # past the 30 s timeout while no daemon runs
    await harness.rebuild()  # attempt 1 times out now
    await harness.drain()
    for _ in range(4):  # the 2 s backoff passes; sweeps and timers both look
        await harness.advance(1.0)
    second = await manual["payment"].next_command()
    assert second.headers[protocol.H_ATTEMPT] == 2
    await manual["payment"].reply(second, "payment_executed", {"payment_id": "p-4"})
    await manual["stock"].next_command()
    await harness.drain()

    timed_out, replied = spans.named("saga order step execute_payment")
    for span, command, attempt in ((timed_out, first, 1), (replied, second, 2)):
        carried = parse_traceparent(command.headers[protocol.H_TRACEPARENT])
        assert carried is not None
        assert (carried.trace_id, carried.parent_id) == (trace_id(span), span_id(span))
        assert span_id(span) == step_span_id(caller.trace_id, "o-4", "execute_payment", 1, attempt)
        assert parent_id(span) == saga_span_id(caller.trace_id, "o-4")
        assert (span.attributes or {})["sagawire.step.attempt"] == attempt
    assert timed_out.status.status_code is StatusCode.ERROR
    assert (timed_out.attributes or {})["sagawire.step.timed_out"] is True
    assert timed_out.start_time == round(sent.timestamp() * 10**6) * 1000
    assert timed_out.end_time is not None
    assert timed_out.end_time - timed_out.start_time == 31 * 10**9
    assert (replied.attributes or {})["sagawire.reply.event"] == "payment_executed"
    assert (replied.attributes or {})["sagawire.step.timed_out"] is False
    assert spans.named("saga order") == []  # still running


async def test_an_abort_ends_the_pending_step_span_and_the_saga_span(
    harness: SagaHarness, manual: dict[str, ScriptedService], spans: RecordedSpans
) -> None:
    await harness.start("order", order("o-5"), "o-5")
    await manual["payment"].next_command()
    await harness.system.tell("o-5", OperatorRequest("abort", "test", request_id="abort-1"))
    await harness.drain()
    step = spans.one("saga order step execute_payment")
    assert (step.attributes or {})["sagawire.step.ended"] == "abandoned"
    saga = spans.one("saga order")
    assert (saga.attributes or {})["sagawire.saga.outcome"] == "aborted"
    assert parent_id(step) == span_id(saga)
