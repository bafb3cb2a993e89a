"""The participant SDK: handler checks, replies, dedupe, and what becomes of bad commands."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import ClassVar

import pytest
import structlog
from pydantic import BaseModel

from participants_sdk import (
    CommandContext,
    MemoryBroker,
    MemoryDedupeStore,
    Participant,
    ParticipantError,
    Reject,
    RetryLater,
    StoredReply,
)
from participants_sdk.errors import DuplicateHandlerError, HandlerSignatureError
from participants_sdk.handlers import event_name_of
from participants_sdk.protocol import (
    COMMANDS_EXCHANGE,
    H_ATTEMPT,
    H_COMPENSATES,
    H_DEAD_LETTER_REASON,
    H_IDEMPOTENCY_KEY,
    H_MACHINE,
    H_REJECTED,
    H_RETRIES,
    H_SERVICE,
    H_STEP,
    H_TRACEPARENT,
    H_VERSION,
    H_VISIT,
    WireMessage,
    command_queue,
    dead_letter_queue,
    reply_queue,
)

COMMANDS = command_queue("payment")
REPLIES = reply_queue("payment")
DEAD_LETTERS = dead_letter_queue(COMMANDS)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class ExecutePayment(BaseModel):
    order_id: str
    amount: float


class PaymentExecuted(BaseModel):
    payment_id: str


class PaymentAccepted(BaseModel):
    event_name: ClassVar[str] = "payment_ok"
    payment_id: str


class HTTPTimeoutHappened(BaseModel):
    pass


def command(
    body: dict | None = None,
    *,
    name: str = "execute_payment",
    attempt: int = 1,
    key: str = "saga-1:execute_payment:1",
    **header_changes: object,
) -> WireMessage:
    headers: dict[str, object] = {
        H_MACHINE: "order",
        H_VERSION: 1,
        H_STEP: "execute_payment",
        H_VISIT: 1,
        H_ATTEMPT: attempt,
        H_IDEMPOTENCY_KEY: key,
        H_TRACEPARENT: TRACEPARENT,
    }
    headers.update(header_changes)
    return WireMessage.json(
        type=name,
        payload={"order_id": "o-1", "amount": 10} if body is None else body,
        correlation_id="saga-1",
        headers={k: v for k, v in headers.items() if v is not None},
    )


def payments(**options) -> Participant:
    participant = Participant("payment", **options)

    @participant.command_handler("execute_payment")
    async def execute_payment(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
        if cmd.amount > 1000:
            raise Reject("payment_failed", reason="over limit", amount=cmd.amount)
        return PaymentExecuted(payment_id=f"p-{cmd.order_id}")

    return participant


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture(autouse=True)
def default_logging():
    # Another test may leave structlog configured for a stream that is closed by now.
    structlog.reset_defaults()


async def run(broker: MemoryBroker, participant: Participant, *messages: WireMessage) -> None:
    """Serve `participant`, publish the commands, and return once everything settled."""
    conn = broker.connect()
    async with participant.serve(conn):
        for message in messages:
            await conn.publish(COMMANDS_EXCHANGE, f"payment.{message.type}", message)
            await broker.wait_idle()


def dead_letter_reasons(broker: MemoryBroker) -> list[str]:
    return [m.headers[H_DEAD_LETTER_REASON] for m in broker.messages(DEAD_LETTERS)]


# Decoration-time checks.


async def valid_handler(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted: ...


def not_async(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
    return PaymentExecuted(payment_id="x")


async def three_params(cmd: ExecutePayment, ctx: CommandContext, extra: int) -> PaymentExecuted:
    return PaymentExecuted(payment_id="x")


async def unannotated_ctx(cmd: ExecutePayment, ctx) -> PaymentExecuted:
    return PaymentExecuted(payment_id="x")


async def dict_command(cmd: dict, ctx: CommandContext) -> PaymentExecuted:
    return PaymentExecuted(payment_id="x")


async def no_return(cmd: ExecutePayment, ctx: CommandContext):
    return PaymentExecuted(payment_id="x")


async def returns_str(cmd: ExecutePayment, ctx: CommandContext) -> str:
    return "x"


async def unresolvable(cmd: Missing, ctx: CommandContext) -> PaymentExecuted:  # noqa: F821 - the point
    return PaymentExecuted(payment_id="x")


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (not_async, "not_async for command 'execute_payment' must be an async function"),
        (three_params, r"two positional parameters \(command, ctx\), not \(cmd, ctx, extra\)"),
        (unannotated_ctx, "parameter 'ctx' must be annotated with CommandContext"),
        (dict_command, "parameter 'cmd' must be annotated with a pydantic BaseModel subclass"),
        (no_return, "no_return .* must declare its return type as a pydantic BaseModel"),
        (returns_str, "must declare its return type as a pydantic BaseModel subclass"),
        (unresolvable, "cannot resolve the annotations of handler unresolvable.*Missing"),
    ],
)
def test_bad_handlers_fail_at_decoration(fn, message):
    participant = Participant("payment")
    with pytest.raises(TypeError, match=message) as caught:
        participant.command_handler("execute_payment")(fn)
    assert isinstance(caught.value, HandlerSignatureError)
    assert participant.commands == []


def test_decorator_returns_the_function_and_refuses_a_second_handler():
    participant = Participant("payment")
    assert participant.command_handler("execute_payment")(valid_handler) is valid_handler
    with pytest.raises(DuplicateHandlerError, match="for command 'execute_payment' already"):
        participant.command_handler("execute_payment")(valid_handler)
    assert participant.commands == ["execute_payment"]


@pytest.mark.parametrize("name", ["", "pay.ment", "pay*", "has space"])
def test_names_that_would_break_routing_are_refused(name):
    with pytest.raises(ValueError, match="must match"):
        Participant(name)
    with pytest.raises(ValueError, match="must match"):
        Participant("payment").command_handler(name)


def test_event_names():
    assert event_name_of(PaymentExecuted) == "payment_executed"
    assert event_name_of(PaymentAccepted) == "payment_ok"
    assert event_name_of(HTTPTimeoutHappened) == "http_timeout_happened"


# Replies.


@pytest.mark.asyncio
async def test_a_reply_answers_the_step_attempt_it_was_asked_for(broker):
    participant = payments()
    sent = command()
    await run(broker, participant, sent)
    [reply] = broker.messages(REPLIES)
    assert reply.type == "payment_executed"
    assert reply.correlation_id == "saga-1"
    assert reply.message_id != sent.message_id
    assert reply.headers == {
        H_MACHINE: "order",
        H_VERSION: 1,
        H_STEP: "execute_payment",
        H_VISIT: 1,
        H_ATTEMPT: 1,
        H_IDEMPOTENCY_KEY: "saga-1:execute_payment:1",
        H_TRACEPARENT: TRACEPARENT,
        H_SERVICE: "payment",
    }
    assert reply.body == b'{"payment_id":"p-o-1"}'
    assert broker.queue_depth(COMMANDS) == broker.unsettled(COMMANDS) == 0
    assert participant.handled == 1


@pytest.mark.asyncio
async def test_reject_replies_with_the_business_failure(broker):
    await run(broker, payments(), command({"order_id": "o-1", "amount": 5000}))
    [reply] = broker.messages(REPLIES)
    assert reply.type == "payment_failed"
    assert reply.headers[H_REJECTED] is True
    assert reply.body == b'{"reason":"over limit","amount":5000.0}'
    assert broker.messages(DEAD_LETTERS) == []


@pytest.mark.asyncio
async def test_a_duplicate_is_answered_from_the_stored_reply(broker):
    participant = payments()
    await run(broker, participant, command(attempt=1), command(attempt=2))
    first, second = broker.messages(REPLIES)
    assert (participant.handled, participant.duplicates) == (1, 1)
    assert second.body == first.body
    assert second.type == first.type
    assert (first.headers[H_ATTEMPT], second.headers[H_ATTEMPT]) == (1, 2)
    assert second.message_id != first.message_id


@pytest.mark.asyncio
async def test_concurrent_deliveries_of_one_key_run_the_handler_once(broker):
    participant = Participant("payment")
    started, release = asyncio.Event(), asyncio.Event()

    @participant.command_handler("execute_payment")
    async def slow(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
        started.set()
        await release.wait()
        return PaymentExecuted(payment_id="p-1")

    conn = broker.connect()
    async with participant.serve(conn):
        await conn.publish(COMMANDS_EXCHANGE, "payment.execute_payment", command(attempt=1))
        await conn.publish(COMMANDS_EXCHANGE, "payment.execute_payment", command(attempt=2))
        await started.wait()
        assert broker.unsettled(COMMANDS) == 2  # both deliveries are in flight together
        release.set()
        await broker.wait_idle()
    assert (participant.handled, participant.duplicates) == (1, 1)
    assert [m.headers[H_ATTEMPT] for m in broker.messages(REPLIES)] == [1, 2]


# Bad commands go to the dead-letter queue with a reason.


@pytest.mark.asyncio
async def test_a_command_that_fails_validation_is_dead_lettered_naming_the_field(broker):
    await run(broker, payments(), command({"order_id": "o-1", "amount": "lots"}))
    [reason] = dead_letter_reasons(broker)
    assert reason.startswith("command 'execute_payment' is not a valid ExecutePayment: amount:")
    assert broker.messages(REPLIES) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"[1, 2]", "body must be a JSON object, got list"),
        (b"\xff", "body is not valid UTF-8"),
    ],
)
@pytest.mark.asyncio
async def test_an_unreadable_body_is_dead_lettered(broker, body, reason):
    participant = payments()
    await run(broker, participant, dataclasses.replace(command(), body=body))
    [dead] = dead_letter_reasons(broker)
    assert dead.startswith(reason)
    assert participant.handled == 0


@pytest.mark.asyncio
async def test_an_unknown_command_is_dead_lettered(broker):
    await run(broker, payments(), command(name="refund_payment"))
    assert dead_letter_reasons(broker) == [
        "no handler for command 'refund_payment' on service 'payment'"
    ]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({H_IDEMPOTENCY_KEY: None}, f"command has no {H_IDEMPOTENCY_KEY} header"),
        ({H_STEP: ""}, f"command has no {H_STEP} header"),
        (
            {H_ATTEMPT: "first"},
            f"header {H_ATTEMPT} must be an integer or a decimal string, got 'first'",
        ),
        ({H_ATTEMPT: "1.9"}, f"header {H_ATTEMPT} must be an integer or a decimal string"),
        ({H_ATTEMPT: None}, f"command has no {H_ATTEMPT} header"),
        ({H_ATTEMPT: -2}, f"header {H_ATTEMPT} must be a positive integer, got -2"),
        ({H_VISIT: 0}, f"header {H_VISIT} must be a positive integer, got 0"),
    ],
)
@pytest.mark.asyncio
async def test_a_command_without_its_headers_is_dead_lettered_naming_the_header(
    broker, changes, reason
):
    await run(broker, payments(), command(**changes))
    (got,) = dead_letter_reasons(broker)
    assert got.startswith(reason), got


@pytest.mark.asyncio
async def test_a_command_without_a_saga_id_is_dead_lettered(broker):
    await run(broker, payments(), dataclasses.replace(command(), correlation_id=None))
    assert dead_letter_reasons(broker) == ["command has no correlation_id (the saga id)"]


# Retries.


@pytest.mark.asyncio
async def test_a_flaky_handler_is_retried_until_it_succeeds(broker):
    participant = Participant("payment", retry_backoff=0.01)
    calls: list[int | None] = []

    @participant.command_handler("execute_payment")
    async def flaky(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
        calls.append(ctx.attempt)
        if len(calls) < 3:
            raise ConnectionError("database unavailable")
        return PaymentExecuted(payment_id="p-1")

    await run(broker, participant, command())
    assert calls == [1, 1, 1]  # participant retries keep the orchestrator's attempt
    [reply] = broker.messages(REPLIES)
    assert reply.type == "payment_executed"
    assert participant.handled == 3
    assert broker.messages(DEAD_LETTERS) == []


@pytest.mark.asyncio
async def test_retry_later_uses_the_requested_delay(broker):
    participant = Participant("payment", retry_backoff=10.0, max_retry_backoff=10.0)

    @participant.command_handler("execute_payment")
    async def busy(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
        if participant.handled == 1:
            raise RetryLater(0.01, reason="rate limited")
        return PaymentExecuted(payment_id="p-1")

    await run(broker, participant, command())  # the 10 s backoff would time the test out
    assert [m.type for m in broker.messages(REPLIES)] == ["payment_executed"]


@pytest.mark.asyncio
async def test_an_always_failing_handler_is_dead_lettered_after_max_retries(broker):
    participant = Participant("payment", max_retries=3, retry_backoff=0.01)

    @participant.command_handler("execute_payment")
    async def broken(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
        raise ValueError("boom")

    await run(broker, participant, command())
    assert dead_letter_reasons(broker) == ["handler failed 4 times: ValueError: boom"]
    [dead] = broker.messages(DEAD_LETTERS)
    assert dead.headers[H_RETRIES] == 3
    assert participant.handled == 4
    assert broker.messages(REPLIES) == []


class FakeDelivery:
    """Records how `Participant.handle` settles one delivery."""

    def __init__(self, message: WireMessage) -> None:
        self.message = message
        self.queue = COMMANDS
        self.redelivered = False
        self.settled: list[tuple] = []

    async def ack(self) -> None:
        self.settled.append(("ack",))

    async def requeue(self) -> None:
        self.settled.append(("requeue",))

    async def dead_letter(self, reason: str) -> None:
        self.settled.append(("dead_letter", reason))

    async def retry_later(self, delay: float, headers: dict[str, object]) -> None:
        self.settled.append(("retry_later", delay, headers))


class FlakyPublisher:
    def __init__(self, *, fail: bool) -> None:
        self.fail = fail
        self.published: list[WireMessage] = []

    async def publish(self, exchange: str, routing_key: str, message: WireMessage) -> None:
        if self.fail:
            raise ConnectionError("no confirm")
        self.published.append(message)


@pytest.mark.asyncio
async def test_retry_delays_grow_exponentially_up_to_the_cap():
    participant = Participant("payment", max_retries=5, retry_backoff=0.5, max_retry_backoff=3.0)

    @participant.command_handler("execute_payment")
    async def broken(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
        raise KeyError("card")

    outcomes = []
    for retries in range(6):
        delivery = FakeDelivery(command().with_headers(**{H_RETRIES: retries}))
        await participant.handle(delivery, FlakyPublisher(fail=False))
        outcomes.extend(delivery.settled)
    assert outcomes == [
        ("retry_later", 0.5, {H_RETRIES: 1}),
        ("retry_later", 1.0, {H_RETRIES: 2}),
        ("retry_later", 2.0, {H_RETRIES: 3}),
        ("retry_later", 3.0, {H_RETRIES: 4}),
        ("retry_later", 3.0, {H_RETRIES: 5}),
        ("dead_letter", "handler failed 6 times: KeyError: 'card'"),
    ]


@pytest.mark.asyncio
async def test_an_unconfirmed_reply_requeues_and_the_redelivery_resends_it():
    store = MemoryDedupeStore()
    participant = payments(dedupe=store)
    failed = FakeDelivery(command())
    await participant.handle(failed, FlakyPublisher(fail=True))
    assert failed.settled == [("requeue",)]
    assert await store.get("saga-1:execute_payment:1") == StoredReply(
        "payment_executed", {"payment_id": "p-o-1"}
    )

    publisher, again = FlakyPublisher(fail=False), FakeDelivery(command())
    await participant.handle(again, publisher)
    assert again.settled == [("ack",)]
    assert [m.type for m in publisher.published] == ["payment_executed"]
    assert (participant.handled, participant.duplicates) == (1, 1)


@pytest.mark.asyncio
async def test_handle_outside_serve_needs_a_broker():
    with pytest.raises(ParticipantError, match="needs the broker"):
        await payments().handle(FakeDelivery(command()))


# The dedupe store.


@pytest.mark.asyncio
async def test_memory_dedupe_store_evicts_the_least_recently_used():
    store = MemoryDedupeStore(max_entries=2)
    reply = StoredReply("payment_executed", {})
    await store.put("a", reply)
    await store.put("b", reply)
    assert await store.get("a") == reply  # "a" is now the most recent
    await store.put("c", reply)
    assert await store.get("b") is None
    assert await store.get("a") == reply
    assert len(store) == 2


# Serving.


@pytest.mark.asyncio
async def test_serve_waits_for_handlers_in_flight_before_exiting(broker):
    participant = Participant("payment")
    started, release = asyncio.Event(), asyncio.Event()
    events: list[str] = []

    @participant.command_handler("execute_payment")
    async def slow(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
        started.set()
        await release.wait()
        await asyncio.sleep(0.01)  # work still going on when the serve block ends
        events.append("handler finished")
        return PaymentExecuted(payment_id="p-1")

    conn = broker.connect()
    async with participant.serve(conn):
        await conn.publish(COMMANDS_EXCHANGE, "payment.execute_payment", command())
        await started.wait()
        release.set()
    events.append("serve exited")
    assert events == ["handler finished", "serve exited"]
    assert [m.type for m in broker.messages(REPLIES)] == ["payment_executed"]
    assert broker.unsettled(COMMANDS) == 0

    await conn.publish(COMMANDS_EXCHANGE, "payment.execute_payment", command(key="k-2"))
    assert broker.queue_depth(COMMANDS) == 1  # nobody consumes after exit


@pytest.mark.asyncio
async def test_serve_cancels_handlers_past_the_grace_period_and_requeues_them(broker):
    participant = Participant("payment")
    started = asyncio.Event()

    @participant.command_handler("execute_payment")
    async def stuck(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError

    conn = broker.connect()
    async with participant.serve(conn, grace=0.05):
        await conn.publish(COMMANDS_EXCHANGE, "payment.execute_payment", command())
        await started.wait()
    [back] = broker.messages(COMMANDS)
    assert back.type == "execute_payment"
    assert broker.unsettled(COMMANDS) == 0
    assert broker.messages(REPLIES) == []


@pytest.mark.asyncio
async def test_serve_refuses_a_participant_without_handlers_or_serving_twice(broker):
    with pytest.raises(ParticipantError, match="no command handlers"):
        async with Participant("payment").serve(broker.connect()):
            pass
    participant = payments()
    async with participant.serve(broker.connect()):
        with pytest.raises(ParticipantError, match="serving already"):
            async with participant.serve(broker.connect()):
                pass


@pytest.mark.asyncio
async def test_the_context_names_the_step_a_compensation_undoes(broker):
    participant = Participant("payment")
    seen: list[CommandContext] = []

    @participant.command_handler("refund_payment")
    async def refund(cmd: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
        seen.append(ctx)
        return PaymentRefunded(order_id=cmd.order_id)

    await run(
        broker,
        participant,
        command(
            {"order_id": "o-1"},
            name="refund_payment",
            key="saga-1:compensate:execute_payment:1",
            **{H_STEP: "compensate:execute_payment", H_COMPENSATES: "saga-1:execute_payment:1"},
        ),
    )
    [ctx] = seen
    assert ctx.compensates == "saga-1:execute_payment:1"
    assert ctx.step == "compensate:execute_payment"
    assert (ctx.saga_id, ctx.attempt, ctx.visit) == ("saga-1", 1, 1)
    assert ctx.traceparent == TRACEPARENT


class RefundPayment(BaseModel):
    order_id: str


class PaymentRefunded(BaseModel):
    order_id: str


class NotFullyDefined(BaseModel):
    item: Missing  # type: ignore[name-defined]  # noqa: F821 - never defined: pydantic defers it


@pytest.mark.asyncio
async def test_serve_refuses_a_command_model_pydantic_cannot_complete(broker):
    participant = Participant("payment")

    @participant.command_handler("execute_payment")
    async def execute(cmd: NotFullyDefined, ctx: CommandContext) -> PaymentExecuted:
        return PaymentExecuted(payment_id="p-1")

    with pytest.raises(HandlerSignatureError, match=r"model NotFullyDefined is not fully defined"):
        async with participant.serve(broker.connect()):
            pass
    assert broker.queue_names() == []  # refused before it declared or consumed anything


def test_the_handlers_are_readable_with_their_models_but_not_writable():
    participant = payments()
    handler = participant.handlers["execute_payment"]
    assert (handler.command_model, handler.reply_model) == (ExecutePayment, PaymentExecuted)
    assert handler.event == "payment_executed"
    with pytest.raises(TypeError):
        participant.handlers["refund_payment"] = handler  # type: ignore[index]
