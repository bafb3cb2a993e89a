"""OpenTelemetry traces, piece by piece: span ids from saga data, the spans a decision ends, a
participant's span, and what happens without OpenTelemetry (installed or configured).

The runtime suite (tests/runtime/test_otel_traces.py) runs whole sagas over both backends.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from decide_support import (
    NOW,
    ORDER,
    ORDER_DATA,
    applied,
    at,
    machine,
    operator,
    reply,
    run,
)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel
from structlog.testing import capture_logs

import orchestrator.tracing
import participants_sdk.tracing
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.messages import Message, StartSaga, TimerFired
from orchestrator.core.saga import OutgoingCommand, Saga
from orchestrator.tracing import (
    command_traceparent,
    format_traceparent,
    parse_traceparent,
    record_decision,
    saga_span_id,
    step_span_id,
    trace_start,
)
from participants_sdk import CommandContext, MemoryBroker, Participant, RetryLater, SagaClient
from participants_sdk import protocol as p
from tests.tracing_support import RecordedSpans, parent_id, recording, span_id, trace_id

ROOT = Path(__file__).resolve().parents[2]
TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER = 0x00F067AA0BA902B7
TRACEPARENT = format_traceparent(TRACE, CALLER, 0x01)


@pytest.fixture
def spans():
    with recording() as recorded:
        yield recorded


@pytest.fixture
def without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if `opentelemetry-api` were not installed (the subprocess test below makes sure the
    modules really import without it)."""
    monkeypatch.setattr(orchestrator.tracing, "AVAILABLE", False)
    monkeypatch.setattr(participants_sdk.tracing, "AVAILABLE", False)


# -- span ids --------------------------------------------------------------------------------


def test_span_ids_are_the_same_for_the_same_saga_data_and_differ_for_any_other():
    one = step_span_id(TRACE, "o-1", "pay", 1, 1)
    assert one == step_span_id(TRACE, "o-1", "pay", 1, 1)
    others = {
        step_span_id(TRACE + 1, "o-1", "pay", 1, 1),
        step_span_id(TRACE, "o-2", "pay", 1, 1),
        step_span_id(TRACE, "o-1", "ship", 1, 1),
        step_span_id(TRACE, "o-1", "compensate:pay", 1, 1),
        step_span_id(TRACE, "o-1", "pay", 2, 1),
        step_span_id(TRACE, "o-1", "pay", 1, 2),
        step_span_id(TRACE, "o-1", "pay", 11, 1),
        step_span_id(TRACE, "o-1", "pay", 1, 11),
        saga_span_id(TRACE, "o-1"),
    }
    assert one not in others
    assert len(others) == 9
    for span in (one, *others):
        assert 0 < span < 2**64


def test_the_parts_of_an_id_cannot_run_into_each_other():
    # Saga "a:b" step "c" is not saga "a" step "b:c", nor visit 1 attempt 11 visit 11 attempt 1.
    assert step_span_id(TRACE, "a:b", "c", 1, 1) != step_span_id(TRACE, "a", "b:c", 1, 1)
    assert step_span_id(TRACE, "s", "x", 1, 11) != step_span_id(TRACE, "s", "x", 11, 1)


def test_a_traceparent_is_read_and_written_the_w3c_way():
    parsed = parse_traceparent(TRACEPARENT)
    assert parsed is not None
    assert (parsed.trace_id, parsed.parent_id, parsed.flags) == (TRACE, CALLER, 1)
    assert TRACEPARENT == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-more"
    assert parse_traceparent(later) == orchestrator.tracing.TraceParent(TRACE, CALLER, 3)
    for bad in (None, "", "00-xyz", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "00-a-b-c"):
        assert parse_traceparent(bad) is None


# -- the daemon's side -----------------------------------------------------------------------


def started(definition: MachineDefinition, traceparent: str | None = TRACEPARENT) -> Saga:
    message = trace_start(StartSaga("s1", "order", dict(ORDER_DATA), traceparent=traceparent))
    decision = run(definition, None, message)
    record_decision(message, None, decision)
    return decision.saga


def traced(definition: MachineDefinition, saga: Saga, message: Message, now=NOW) -> Saga:
    """What the runtime does: decide, and record the spans of the decision."""
    decision = applied(definition, saga, message, now)
    record_decision(message, saga, decision)
    return decision.saga


def only_command(saga: Saga) -> OutgoingCommand:
    """The command the last decision added (the outbox keeps the ones not yet confirmed)."""
    return saga.outbox[-1]


def test_a_command_carries_its_step_span_while_traced(spans: RecordedSpans):
    saga = started(machine(ORDER))
    command = only_command(saga)
    carried = parse_traceparent(command_traceparent(saga, command))
    assert carried is not None
    assert carried.trace_id == TRACE
    assert carried.parent_id == step_span_id(TRACE, "s1", "pay", 1, 1)
    assert carried.flags == 1


def test_untraced_a_command_carries_the_sagas_own_traceparent_or_none():
    order = machine(ORDER)
    saga = started(order)
    assert command_traceparent(saga, only_command(saga)) == TRACEPARENT
    untraced = started(order, traceparent=None)
    assert untraced.traceparent is None
    assert command_traceparent(untraced, only_command(untraced)) is None


def test_the_spans_of_a_decision_end_where_the_step_ends(spans: RecordedSpans):
    order = machine(ORDER)
    saga = started(order)
    assert spans.all() == []  # nothing has ended yet
    saga = traced(order, saga, reply("pay", "payment_executed"), at(3))
    [pay] = spans.all()
    assert pay.name == "saga order step pay"
    assert pay.kind is SpanKind.PRODUCER
    assert span_id(pay) == step_span_id(TRACE, "s1", "pay", 1, 1)
    assert parent_id(pay) == saga_span_id(TRACE, "s1")
    assert pay.start_time is not None
    assert pay.end_time is not None
    assert (pay.end_time - pay.start_time) == 3 * 10**9
    attributes = pay.attributes or {}
    assert attributes["sagawire.step.ended"] == "replied"
    assert attributes["sagawire.reply.event"] == "payment_executed"
    assert attributes["sagawire.reply.rejected"] is False
    assert attributes["messaging.rabbitmq.destination.routing_key"] == "payment.execute_payment"
    assert attributes["messaging.message.id"] == "s1:pay:1:1"


def test_a_timed_out_attempt_ends_with_an_error_and_its_retry_gets_a_span_of_its_own(
    spans: RecordedSpans,
):
    order = machine(ORDER)
    saga = started(order)
    saga = traced(order, saga, TimerFired(), at(10))  # pay's 10 s timeout: back off 1 s
    [first] = spans.all()
    assert (first.attributes or {})["sagawire.step.ended"] == "timed_out"
    assert (first.attributes or {})["sagawire.step.timed_out"] is True
    assert first.status.status_code is StatusCode.ERROR
    saga = traced(order, saga, TimerFired(), at(11))  # the backoff ends: attempt 2 goes
    assert len(spans.all()) == 1  # a backoff is no attempt
    retry = only_command(saga)
    assert retry.attempt == 2
    carried = parse_traceparent(command_traceparent(saga, retry))
    assert carried is not None
    assert carried.parent_id == step_span_id(TRACE, "s1", "pay", 1, 2)
    traced(order, saga, reply("pay", "payment_executed", attempt=1), at(12))
    second = spans.all()[1]
    assert span_id(second) == step_span_id(TRACE, "s1", "pay", 1, 2)
    assert (second.attributes or {})["sagawire.step.attempt"] == 2
    assert (second.attributes or {})["sagawire.step.ended"] == "replied"


def test_an_operator_retry_ends_the_attempt_it_replaces(spans: RecordedSpans):
    order = machine(ORDER)
    saga = traced(order, started(order), operator("retry"), at(1))
    [first] = spans.all()
    assert (first.attributes or {})["sagawire.step.ended"] == "retried"
    assert (first.attributes or {})["sagawire.step.attempt"] == 1
    assert only_command(saga).attempt == 2


def test_a_saga_span_ends_with_the_outcome_and_a_resumed_saga_gets_a_second_one(
    spans: RecordedSpans,
):
    order = machine(ORDER)
    saga = traced(order, started(order), reply("pay", "payment_executed"), at(1))
    saga = traced(order, saga, reply("reserve", "stock_reserved"), at(2))
    saga = traced(order, saga, reply("ship", "delivery_failed", rejected=True), at(3))
    compensation = order.states["reserve"].compensation
    assert compensation is not None
    retry = compensation.retry
    clock = 3.0
    for attempt in range(1, retry.attempts + 1):  # compensate:reserve fails until it gives up
        saga = traced(
            order,
            saga,
            reply("compensate:reserve", "busy", attempt=attempt, rejected=True),
            at(clock),
        )
        if attempt < retry.attempts:
            clock += retry.delay_after(attempt)
            saga = traced(order, saga, TimerFired(), at(clock))
    assert saga.status.value == "failed"
    [first] = spans.named("saga order")
    assert first.status.status_code is StatusCode.ERROR
    assert span_id(first) == saga_span_id(TRACE, "s1")
    assert parent_id(first) == CALLER
    attempts = spans.named("saga order compensation reserve")
    assert [(s.attributes or {})["sagawire.step.attempt"] for s in attempts] == [1, 2, 3, 4, 5]
    assert all(parent_id(s) == span_id(first) for s in attempts)

    saga = traced(order, saga, operator("resume"), at(clock + 1))
    saga = traced(order, saga, reply("compensate:reserve", "released", attempt=6), at(clock + 2))
    saga = traced(order, saga, reply("compensate:pay", "refunded"), at(clock + 3))
    assert saga.status.value == "compensated"
    assert len(spans.named("saga order compensation reserve")) == 6
    [again] = spans.named("saga order resumed")
    assert parent_id(again) == span_id(first)
    assert span_id(again) != span_id(first)
    assert again.start_time == orchestrator.tracing._ns(at(clock + 1))
    assert (again.attributes or {})["sagawire.saga.outcome"] == "compensated"
    assert len(spans.named("saga order")) == 1


def test_a_start_without_a_trace_gets_one_whose_root_is_the_saga_span(spans: RecordedSpans):
    message = trace_start(StartSaga("s1", "order", dict(ORDER_DATA)))
    made = parse_traceparent(message.traceparent)
    assert made is not None
    assert made.parent_id == saga_span_id(made.trace_id, "s1")
    assert made.flags & 1
    order = machine(ORDER)
    decision = run(order, None, message)
    saga = traced(order, decision.saga, operator("abort"), at(1))
    assert saga.status.value == "aborted"
    pay, root = spans.all()
    assert root.name == "saga order"
    assert root.parent is None
    assert (trace_id(root), span_id(root)) == (made.trace_id, made.parent_id)
    assert parent_id(pay) == span_id(root)
    assert (pay.attributes or {})["sagawire.step.ended"] == "abandoned"


def test_a_start_with_a_trace_keeps_it():
    message = StartSaga("s1", "order", {}, traceparent=TRACEPARENT)
    with recording():
        assert trace_start(message) is message


def test_a_trace_the_sampler_drops_is_marked_so_and_records_nothing():
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    with recording() as spans:
        orchestrator.tracing.use_tracer_provider(provider)
        message = trace_start(StartSaga("s1", "order", dict(ORDER_DATA)))
        made = parse_traceparent(message.traceparent)
        assert made is not None
        assert made.flags & 1 == 0
        order = machine(ORDER)
        saga = run(order, None, message).saga
        traced(order, saga, reply("pay", "payment_failed", rejected=True))
        assert spans.all() == []


def test_the_application_keeps_its_own_span_ids(spans: RecordedSpans):
    provider = spans.provider
    generator = provider.id_generator
    order = machine(ORDER)
    saga = started(order)
    with provider.get_tracer("app").start_as_current_span("app") as app:
        traced(order, saga, reply("pay", "payment_executed"))
    [pay] = spans.named("saga order step pay")
    assert parent_id(pay) != app.get_span_context().span_id  # the current span plays no part
    assert provider.id_generator is generator
    assert provider.get_tracer("app").id_generator is generator
    # Sagawire's own tracer, outside one of its saga spans, asks the provider's generator.
    sagawire = spans.provider.get_tracer(orchestrator.tracing.SCOPE)
    with sagawire.start_as_current_span("other") as other:
        assert other.get_span_context().span_id not in {span_id(pay), 0}
        assert other.get_span_context().trace_id != TRACE


def test_a_tracer_that_cannot_take_span_ids_is_left_alone():
    class Foreign(trace.TracerProvider):
        def get_tracer(self, *args, **kwargs) -> trace.Tracer:
            return trace.NoOpTracer()

    orchestrator.tracing.use_tracer_provider(Foreign())
    try:
        with capture_logs() as logs:
            assert not orchestrator.tracing.enabled()
            assert not orchestrator.tracing.enabled()
        assert [log["event"] for log in logs] == ["tracing_unsupported"]
        saga = started(machine(ORDER))
        assert command_traceparent(saga, only_command(saga)) == TRACEPARENT
    finally:
        orchestrator.tracing.use_tracer_provider(None)


def test_with_the_api_installed_and_no_provider_configured_nothing_is_traced():
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not orchestrator.tracing.enabled()
    message = StartSaga("s1", "order", {})
    assert trace_start(message) is message
    assert participants_sdk.tracing.command_span("payment", command_message()) is (
        participants_sdk.tracing.UNTRACED
    )


def test_a_provider_configured_later_is_taken_up_within_a_second(
    monkeypatch: pytest.MonkeyPatch,
):
    now = [100.0]
    # The look-up (`participants_sdk.tracing.TracerLookup`) is shared with the SDK.
    monkeypatch.setattr(
        participants_sdk.tracing, "time", types.SimpleNamespace(monotonic=lambda: now[0])
    )
    configured: list[trace.TracerProvider] = [trace.ProxyTracerProvider()]
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: configured[-1])
    orchestrator.tracing.use_tracer_provider(None)
    try:
        assert not orchestrator.tracing.enabled()
        configured.append(TracerProvider(shutdown_on_exit=False))  # the application's, later
        now[0] += 0.5
        assert not orchestrator.tracing.enabled()  # not looked for again so soon
        now[0] += 0.6
        assert orchestrator.tracing.enabled()
    finally:
        orchestrator.tracing.use_tracer_provider(None)


def test_a_failure_to_record_never_reaches_the_runtime(
    spans: RecordedSpans, monkeypatch: pytest.MonkeyPatch
):
    def broken(*_: object) -> None:
        raise RuntimeError("exporter on fire")

    monkeypatch.setattr(orchestrator.tracing, "_record", broken)
    order = machine(ORDER)
    saga = started(order)
    with capture_logs() as logs:
        traced(order, saga, reply("pay", "payment_executed"))
    assert [log["event"] for log in logs] == ["tracing_failed"]


# -- the participant's side ------------------------------------------------------------------


def command_message(key: str = "s1:pay:1", attempt: int = 1) -> p.WireMessage:
    return p.WireMessage.json(
        type="execute_payment",
        payload={"amount": 5},
        correlation_id="s1",
        headers={
            p.H_MACHINE: "order",
            p.H_VERSION: 1,
            p.H_STEP: "pay",
            p.H_VISIT: 1,
            p.H_ATTEMPT: attempt,
            p.H_IDEMPOTENCY_KEY: key,
            p.H_TRACEPARENT: TRACEPARENT,
        },
    )


class Pay(BaseModel):
    amount: int


class PaymentExecuted(BaseModel):
    current: str


def payments(calls: list[str]) -> Participant:
    participant = Participant("payment", retry_backoff=0, max_retries=1)

    @participant.command_handler("execute_payment")
    async def execute_payment(cmd: Pay, ctx: CommandContext) -> PaymentExecuted:
        calls.append(ctx.idempotency_key)
        if cmd.amount < 0:
            raise RetryLater(0, reason="not yet")
        # What the handler calls joins the trace: the command's span is current here.
        current = trace.get_current_span().get_span_context()
        return PaymentExecuted(current=f"{current.trace_id:032x}-{current.span_id:016x}")

    return participant


async def serve(participant: Participant, *commands: p.WireMessage) -> list[p.WireMessage]:
    broker = MemoryBroker()
    connection = broker.connect()
    await connection.declare_topology(["payment"])
    async with participant.serve(connection):
        for message in commands:
            await connection.publish(p.COMMANDS_EXCHANGE, "payment.execute_payment", message)
            await broker.wait_idle()
    return broker.messages(p.reply_queue("payment"))


@pytest.mark.asyncio
async def test_a_participant_spans_each_command_as_a_child_of_its_traceparent(
    spans: RecordedSpans,
):
    calls: list[str] = []
    first, duplicate = await serve(payments(calls), command_message(), command_message(attempt=2))
    assert calls == ["s1:pay:1"]
    handled, answered = spans.consumers()
    for span, reply_message in ((handled, first), (answered, duplicate)):
        assert span.name == "payment execute_payment process"
        assert span.context is not None
        assert span.context.trace_id == TRACE
        assert parent_id(span) == CALLER
        carried = parse_traceparent(reply_message.headers[p.H_TRACEPARENT])
        assert carried is not None
        assert (carried.trace_id, carried.parent_id) == (TRACE, span_id(span))
    assert (handled.attributes or {})["sagawire.duplicate"] is False
    assert (answered.attributes or {})["sagawire.duplicate"] is True
    assert (answered.attributes or {})["sagawire.step.attempt"] == 2
    assert (handled.attributes or {})["sagawire.saga.id"] == "s1"
    assert (handled.attributes or {})["messaging.destination.subscription.name"] == (
        "sagawire.payment.commands"
    )
    body = p.decode_json_object(first.body)
    assert body["current"] == f"{TRACE:032x}-{span_id(handled):016x}"


@pytest.mark.asyncio
async def test_a_retried_command_shows_as_an_error_each_time(spans: RecordedSpans):
    bad = p.WireMessage.json(
        type="execute_payment",
        payload={"amount": -1},
        correlation_id="s1",
        headers=command_message().headers,
    )
    assert await serve(payments([]), bad) == []
    retried, dead = spans.consumers()
    assert retried.status.status_code is StatusCode.ERROR
    assert (retried.attributes or {})["sagawire.outcome"] == "retry"
    assert dead.status.status_code is StatusCode.ERROR
    assert (dead.attributes or {})["sagawire.outcome"] == "dead_lettered"
    assert parent_id(dead) == CALLER


@pytest.mark.asyncio
async def test_the_saga_client_sends_the_current_span(spans: RecordedSpans):
    broker = MemoryBroker()
    connection = broker.connect()
    await connection.declare_topology([])
    client = SagaClient(connection)
    with spans.provider.get_tracer("app").start_as_current_span("checkout") as checkout:
        await client.start_saga("order", {}, saga_id="o-1")
        await client.start_saga("order", {}, saga_id="o-2", traceparent=TRACEPARENT)
    await client.start_saga("order", {}, saga_id="o-3")  # no span current
    sent = {m.correlation_id: m.headers for m in broker.messages(p.CONTROL_QUEUE)}
    context = checkout.get_span_context()
    assert sent["o-1"] == {
        p.H_TRACEPARENT: format_traceparent(context.trace_id, context.span_id, context.trace_flags)
    }
    assert sent["o-2"] == {p.H_TRACEPARENT: TRACEPARENT}
    assert sent["o-3"] == {}


# -- without OpenTelemetry -------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.usefixtures("without_opentelemetry")
async def test_without_opentelemetry_the_wire_is_as_it_was(spans: RecordedSpans):
    order = machine(ORDER)
    saga = started(order)
    assert command_traceparent(saga, only_command(saga)) == TRACEPARENT
    message = StartSaga("s2", "order", {})
    assert trace_start(message) is message
    traced(order, saga, reply("pay", "payment_executed"))
    assert participants_sdk.tracing.command_span("payment", command_message()) is (
        participants_sdk.tracing.UNTRACED
    )
    with spans.provider.get_tracer("app").start_as_current_span("checkout"):
        assert participants_sdk.tracing.current_traceparent() is None
        [reply_message] = await serve(payments([]), command_message())
    assert reply_message.headers[p.H_TRACEPARENT] == TRACEPARENT  # copied, as always
    assert spans.named("checkout") != []
    assert [s for s in spans.all() if s.name != "checkout"] == []


def test_nothing_but_the_two_tracing_modules_imports_opentelemetry():
    importers = []
    for package in ("orchestrator", "participants_sdk"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(name.split(".")[0] == "opentelemetry" for name in names):
                    importers.append(str(path.relative_to(ROOT)))
    assert sorted(set(importers)) == ["orchestrator/tracing.py", "participants_sdk/tracing.py"]


NO_OPENTELEMETRY = textwrap.dedent(
    """
    import asyncio, pathlib, sys
    sys.modules["opentelemetry"] = None  # `import opentelemetry` fails, as when not installed

    from orchestrator.core.machines import load_machines
    from orchestrator.demo.participants import FaultPlan, Ledger, demo_services, example_order
    from orchestrator.testing import SagaHarness
    import orchestrator.tracing, participants_sdk.tracing
    from participants_sdk import SagaClient, protocol

    TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def main():
        assert not orchestrator.tracing.AVAILABLE and not participants_sdk.tracing.AVAILABLE
        async with SagaHarness(load_machines(pathlib.Path("machines"))) as harness:
            for service in demo_services(FaultPlan(), Ledger()):
                await harness.serve(service)
            client = SagaClient(await harness.connect())
            await client.start_saga("order", example_order("o-1"), saga_id="o-1",
                                    traceparent=TRACEPARENT)
            await harness.start("order", example_order("o-2"), "o-2")
            await harness.drain()
            for saga_id, traceparent in (("o-1", TRACEPARENT), ("o-2", None)):
                saga = await harness.saga(saga_id)
                assert saga.status.value == "succeeded", saga.status
                assert saga.traceparent == traceparent
        loaded = [m for m, mod in sys.modules.items() if m.startswith("opentelemetry") and mod]
        assert not loaded, loaded
        print("ok")

    asyncio.run(main())
    """
)


GLOBAL_PROVIDER = textwrap.dedent(
    """
    import asyncio, pathlib
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from orchestrator.core.machines import load_machines
    from orchestrator.demo.participants import FaultPlan, Ledger, demo_services, example_order
    from orchestrator.testing import SagaHarness
    from participants_sdk import SagaClient

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # what an application (or opentelemetry-instrument) does

    async def main():
        async with SagaHarness(load_machines(pathlib.Path("machines"))) as harness:
            for service in demo_services(FaultPlan(), Ledger()):
                await harness.serve(service)
            client = SagaClient(await harness.connect())
            with trace.get_tracer("app").start_as_current_span("checkout"):
                await client.start_saga("order", example_order("o-1"), saga_id="o-1")
            await harness.drain()
        spans = exporter.get_finished_spans()
        print(len({span.context.trace_id for span in spans}), sorted(span.name for span in spans))

    asyncio.run(main())
    """
)


def test_the_global_provider_of_an_application_is_used():
    result = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", GLOBAL_PROVIDER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    traces, names = result.stdout.splitlines()[-1].split(" ", 1)
    assert traces == "1"
    assert ast.literal_eval(names) == sorted(
        [
            "checkout",
            "saga order",
            *(f"saga order step {step}" for step in STEPS),
            *(f"{service} {step} process" for step, service in STEPS.items()),
        ]
    )


STEPS = {"execute_payment": "payment", "prepare_order": "stock", "deliver_order": "delivery"}


def test_without_opentelemetry_installed_everything_imports_and_sagas_run():
    result = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", NO_OPENTELEMETRY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "ok"  # after the logs
