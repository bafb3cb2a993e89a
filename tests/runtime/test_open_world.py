"""Messages Sagawire did not write, on the memory adapters and on a real RabbitMQ and MongoDB.

Replies typed the way Go, Node and Java clients type them, header values no client should send,
data the store cannot hold, replies from a service that does not own the step, a second start
under the same id, a reply to an earlier attempt, a command published long after its save.
Every test runs on both backends (see conftest).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
from runtime_support import order

from orchestrator.core.decide import decide
from orchestrator.core.messages import StartSaga
from orchestrator.core.saga import SagaStatus
from orchestrator.errors import StartRefused
from orchestrator.testing import SagaHarness, ScriptedService
from participants_sdk import protocol
from participants_sdk.limits import UnstorableData
from participants_sdk.transport import Delivery

pytestmark = pytest.mark.asyncio


class DeadLetters:
    """Takes what reaches one DLQ, through the harness's broker (either backend)."""

    def __init__(self) -> None:
        self.letters: list[protocol.WireMessage] = []
        self.arrived = asyncio.Event()

    @classmethod
    async def of(cls, harness: SagaHarness, queue: str) -> DeadLetters:
        taken = cls()
        connection = await harness.connect()

        async def take(delivery: Delivery) -> None:
            taken.letters.append(delivery.message)
            taken.arrived.set()
            await delivery.ack()

        await connection.consume(protocol.dead_letter_queue(queue), take)
        return taken

    def reasons(self) -> list[str]:
        return [str(m.header_display(protocol.H_DEAD_LETTER_REASON)) for m in self.letters]

    async def wait(self, count: int, timeout: float = 10.0) -> list[str]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while len(self.letters) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.reasons()


def reply_to(
    command: protocol.WireMessage,
    event: str,
    payload: dict[str, Any] | bytes | None = None,
    *,
    service: str,
    content_type: str = protocol.CONTENT_TYPE_JSON,
    content_encoding: str = "",
    **header_changes: Any,
) -> protocol.WireMessage:
    """A reply to `command` built by hand, as a participant in another language would."""
    headers: dict[str, Any] = {
        name: command.headers[name]
        for name in (
            protocol.H_MACHINE,
            protocol.H_VERSION,
            protocol.H_STEP,
            protocol.H_VISIT,
            protocol.H_ATTEMPT,
        )
    }
    headers[protocol.H_IDEMPOTENCY_KEY] = command.headers[protocol.H_IDEMPOTENCY_KEY]
    headers[protocol.H_SERVICE] = service
    headers.update(header_changes)
    body = payload if isinstance(payload, bytes) else json.dumps(payload or {}).encode()
    return protocol.WireMessage(
        message_id=protocol.new_message_id(),
        type=event,
        body=body,
        correlation_id=command.correlation_id,
        headers={k: v for k, v in headers.items() if v is not None},
        content_type=content_type,
        content_encoding=content_encoding,
    )


async def send(
    service: ScriptedService, message: protocol.WireMessage, key: str | None = None
) -> None:
    assert service.connection is not None
    await service.connection.publish(protocol.REPLIES_EXCHANGE, key or service.service, message)


def events(saga: Any, kind: str) -> list[tuple[str | None, int | None]]:
    return [(h.step, h.attempt) for h in saga.history if h.event == kind]


# -- class 1: header values as other languages' clients type them ------------------------------


async def test_booleans_and_integers_sent_as_strings_are_read_as_such(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    """`x-sagawire-rejected: "false"` is a success: the payment joins the completed steps and
    is refunded when the stock step fails (`"true"`); the refund's `"0"` ends it compensated."""
    payment, stock = manual["payment"], manual["stock"]
    await harness.start("order", order("o-1"), "o-1")
    command = await payment.next_command()
    strings = {protocol.H_VERSION: "1", protocol.H_VISIT: "1", protocol.H_ATTEMPT: "1"}
    await send(
        payment,
        reply_to(
            command,
            "payment_executed",
            {"payment_id": "p-1"},
            service="payment",
            content_type="application/json; charset=utf-8",
            **{protocol.H_REJECTED: "false", **strings},
        ),
    )
    command = await stock.next_command()
    await send(
        stock, reply_to(command, "out_of_stock", service="stock", **{protocol.H_REJECTED: "true"})
    )
    refund = await payment.next_command()
    assert refund.type == "refund_payment"
    await send(
        payment,
        reply_to(
            refund, "payment_refunded", service="payment", **{protocol.H_REJECTED: bytearray(b"0")}
        ),
    )
    await harness.drain()

    saga = await harness.saga("o-1")
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.compensation is not None
    assert saga.compensation.done == ["execute_payment"]
    assert saga.rejected == ["prepare_order:1"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {protocol.H_ATTEMPT: " 1"},
            f"header {protocol.H_ATTEMPT} must be an integer or a decimal string",
        ),
        (
            {protocol.H_ATTEMPT: "\u0661"},
            f"header {protocol.H_ATTEMPT} must be an integer or a decimal string",
        ),
        (
            {protocol.H_ATTEMPT: "1.9"},
            f"header {protocol.H_ATTEMPT} must be an integer or a decimal string",
        ),
        (
            {protocol.H_ATTEMPT: 1.0},
            f"header {protocol.H_ATTEMPT} must be an integer or a decimal string",
        ),
        (
            {protocol.H_ATTEMPT: True},
            f"header {protocol.H_ATTEMPT} must be an integer, got bool True",
        ),
        (
            {protocol.H_VISIT: "0x1"},
            f"header {protocol.H_VISIT} must be an integer or a decimal string",
        ),
        (
            {protocol.H_REJECTED: "no"},
            f"header {protocol.H_REJECTED} must be a boolean (true/false/1/0)",
        ),
        (
            {protocol.H_REJECTED: 2},
            f"header {protocol.H_REJECTED} must be a boolean (true/false/1/0)",
        ),
        ({protocol.H_STEP: bytearray(b"\xff\xfe")}, f"header {protocol.H_STEP} is not valid UTF-8"),
        (
            {protocol.H_STEP: ["execute_payment"]},
            f"header {protocol.H_STEP} must be a string, got list",
        ),
        ({"content_encoding": "gzip"}, "content encoding 'gzip' is not supported"),
        ({"content_type": "text/plain"}, "content type 'text/plain' is not application/json"),
        (
            {"content_type": "application/json; charset=latin-1"},
            "content type 'application/json; charset=latin-1': the body must be UTF-8 JSON",
        ),
        ({protocol.H_SERVICE: None}, f"header {protocol.H_SERVICE} is missing"),
    ],
    ids=lambda v: repr(v)[:40],
)
async def test_header_values_outside_the_rules_are_dead_lettered_with_the_reason(
    harness: SagaHarness, manual: dict[str, ScriptedService], changes: dict[str, Any], reason: str
) -> None:
    payment = manual["payment"]
    letters = await DeadLetters.of(harness, protocol.reply_queue("payment"))
    await harness.start("order", order("o-2"), "o-2")
    command = await payment.next_command()
    changes = dict(changes)  # the parameter is shared by both backends' runs
    properties = {k: changes.pop(k) for k in ("content_type", "content_encoding") if k in changes}
    bad = reply_to(command, "payment_executed", {"payment_id": "p-1"}, service="payment", **changes)
    bad = dataclasses.replace(bad, **properties)
    await send(payment, bad)

    (got,) = await letters.wait(1)
    assert got.startswith(f"invalid_message: {reason}"), got
    assert len(got.encode()) < 1024
    saga = await harness.saga("o-2")
    assert saga.state == "execute_payment"
    assert saga.pending[0].step == "execute_payment"  # nothing was applied
    # The participant's proper reply still goes through.
    await send(
        payment, reply_to(command, "payment_executed", {"payment_id": "p-1"}, service="payment")
    )
    await manual["stock"].next_command()


# -- class 4: data the store cannot hold --------------------------------------------------------

UNSTORABLE = [
    ({"a.b": 1}, "key 'a.b' contains '.'"),
    ({"$set": 1}, "key '$set' starts with '$'"),
    ({"k\u0000": 1}, "contains a NUL character"),
    ({"n": float("inf")}, "number inf is not finite"),
    ({"n": 2**64}, "does not fit in 64 bits"),
    ({"s": "\ud800"}, "holds a lone surrogate"),
]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"n": value}
    return value


@pytest.mark.parametrize(("data", "problem"), [*UNSTORABLE, (nested(40), "nested deeper than")])
async def test_start_data_the_store_cannot_hold_is_refused_where_it_enters(
    harness: SagaHarness, data: dict[str, Any], problem: str
) -> None:
    with pytest.raises(UnstorableData, match="start data cannot be stored: ") as raised:
        await harness.system.start_saga("order", {**order("o-3"), "extra": data}, saga_id="o-3")
    assert problem in str(raised.value)

    # Through the control queue, as JSON: refused with the reason, never retried.
    letters = await DeadLetters.of(harness, protocol.CONTROL_QUEUE)
    body = {"machine": "order", "saga_id": "o-4", "data": {**order("o-4"), "extra": data}}
    text = json.dumps(body, allow_nan=True).replace("Infinity", "1e400")
    connection = await harness.connect()
    await connection.publish(
        protocol.CONTROL_EXCHANGE,
        protocol.CONTROL_ROUTING_KEY,
        protocol.WireMessage(message_id="start:o-4", type="start", body=text.encode()),
    )
    (reason,) = await letters.wait(1)
    assert reason.startswith("invalid_message: start data cannot be stored: $.extra"), reason
    assert problem in reason
    await harness.drain()
    assert await harness.store.load("o-4") is None
    assert harness.system.stats.transient_failures == 0


@pytest.mark.parametrize(("payload", "problem"), UNSTORABLE[:3])
async def test_a_reply_the_store_cannot_hold_compensates_its_step_at_once(
    harness: SagaHarness,
    manual: dict[str, ScriptedService],
    payload: dict[str, Any],
    problem: str,
) -> None:
    """The payment went through but its reply cannot be saved (`save_as: payment`): the step is
    compensated at once (not timed out minutes later), the reply kept in the DLQ."""
    payment = manual["payment"]
    letters = await DeadLetters.of(harness, protocol.reply_queue("payment"))
    await harness.start("order", order("o-5"), "o-5")
    command = await payment.next_command()
    await send(payment, reply_to(command, "payment_executed", payload, service="payment"))
    refund = await payment.next_command()
    assert refund.type == "refund_payment"
    (reason,) = await letters.wait(1)
    assert reason.startswith("unstorable: reply 'payment_executed' of step 'execute_payment'")
    assert problem in reason
    await send(payment, reply_to(refund, "payment_refunded", service="payment"))
    await harness.drain()
    saga = await harness.saga("o-5")
    assert saga.status is SagaStatus.COMPENSATED
    assert events(saga, "reply_refused") == [("execute_payment", 1)]
    assert "payment" not in saga.data
    assert harness.system.stats.transient_failures == 0


# -- class 5: only the service that owns a step settles it ---------------------------------------


async def test_a_reply_from_a_service_that_does_not_own_the_step_is_refused(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    payment, stock = manual["payment"], manual["stock"]
    stock_letters = await DeadLetters.of(harness, protocol.reply_queue("stock"))
    payment_letters = await DeadLetters.of(harness, protocol.reply_queue("payment"))
    await harness.start("order", order("o-6"), "o-6")
    command = await payment.next_command()

    # Stock answers payment's step under its own name and key...
    await send(stock, reply_to(command, "payment_executed", service="stock"))
    (reason,) = await stock_letters.wait(1)
    assert reason == (
        "invalid: reply to step 'execute_payment' comes from service 'stock', "
        "but service 'payment' owns it"
    )
    # ...or names itself but routes to payment's queue.
    await send(stock, reply_to(command, "payment_executed", service="stock"), key="payment")
    (reason,) = await payment_letters.wait(1)
    assert reason.startswith("invalid_message: reply from service 'stock' was published with")

    saga = await harness.saga("o-6")
    assert saga.pending[0].step == "execute_payment"
    await send(
        payment, reply_to(command, "payment_executed", {"payment_id": "p"}, service="payment")
    )
    await stock.next_command()


# -- class 6: a second start under the same id ---------------------------------------------------


async def test_a_second_start_with_other_data_is_refused_and_the_same_start_is_a_no_op(
    harness: SagaHarness,
) -> None:
    letters = await DeadLetters.of(harness, protocol.CONTROL_QUEUE)
    await harness.start("order", order("o-7"), "o-7")
    again = await harness.system.start_saga("order", order("o-7"), saga_id="o-7")
    assert again.disposition.value == "duplicate"
    with pytest.raises(StartRefused, match="saga 'o-7' exists with other data"):
        await harness.system.start_saga("order", {**order("o-7"), "total": 1}, saga_id="o-7")

    connection = await harness.connect()
    body = json.dumps({"machine": "order", "saga_id": "o-7", "data": order("o-8")}).encode()
    await connection.publish(
        protocol.CONTROL_EXCHANGE,
        protocol.CONTROL_ROUTING_KEY,
        protocol.WireMessage(message_id="start:o-7", type="start", body=body),
    )
    (reason,) = await letters.wait(1)
    assert reason.startswith("refused: saga 'o-7' exists with other data: it was started as order")
    assert (await harness.saga("o-7")).data["order_id"] == "o-7"


# -- class 7: a reply to an earlier attempt of the current visit ----------------------------------


async def test_a_late_reply_to_an_earlier_attempt_of_the_visit_is_applied(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    """A backlog longer than the step timeout: attempt 2 went out, then attempt 1's reply
    arrives. It reports the visit's one effect and is applied; attempt 2's is a duplicate."""
    payment = manual["payment"]
    await harness.start("order", order("o-9"), "o-9")
    first = await payment.next_command()
    await harness.advance(31)  # attempt 1 times out; backoff 2 s
    await harness.advance(3)
    second = await payment.next_command()
    assert second.header_int(protocol.H_ATTEMPT) == 2
    assert second.headers[protocol.H_IDEMPOTENCY_KEY] == first.headers[protocol.H_IDEMPOTENCY_KEY]

    await send(payment, reply_to(first, "payment_executed", {"payment_id": "p"}, service="payment"))
    await manual["stock"].next_command()
    await send(
        payment, reply_to(second, "payment_executed", {"payment_id": "p"}, service="payment")
    )
    await harness.drain()

    saga = await harness.saga("o-9")
    assert saga.state == "prepare_order"
    assert events(saga, "replied") == [("execute_payment", 1)]
    assert harness.system.stats.decisions["duplicate"] >= 1


# -- class 8: a deadline counts from the broker's confirm ----------------------------------------


async def test_a_command_published_after_a_restart_gets_its_whole_timeout(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    """The daemon died after saving a saga's first command and before publishing it, and stayed
    down longer than the step's timeout. Its successor publishes the command on recovery, and
    the step's 30 s count from that confirm: no timeout fires 10 s later."""
    await harness.crash()
    definition = harness.registry.latest("order")
    started = decide(
        definition, None, StartSaga("o-10", "order", order("o-10")), harness.clock.now()
    )
    await harness.store.insert(started.saga)  # saved with its outbox, never published
    await harness.clock.advance(45)

    await harness.rebuild()
    command = await manual["payment"].next_command()
    assert command.header_int(protocol.H_ATTEMPT) == 1
    await harness.drain()
    saga = await harness.saga("o-10")
    assert saga.deadline == harness.clock.now() + dt.timedelta(seconds=30)
    assert events(saga, "command_confirmed_late") == [("execute_payment", 1)]
    assert saga.outbox == []

    await harness.advance(20)
    saga = await harness.saga("o-10")
    assert events(saga, "timed_out") == []
    await send(
        manual["payment"],
        reply_to(command, "payment_executed", {"payment_id": "p"}, service="payment"),
    )
    await manual["stock"].next_command()
