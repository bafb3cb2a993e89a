"""Example-based tests of `decide()`: one small machine per behaviour, time moved by hand.

Every call goes through `run()`, which also checks that `decide()` left its input saga as it was
and that a message which changed nothing returned that very saga object with no commands.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from orchestrator.core.decide import decide
from orchestrator.core.definition import MachineDefinition, TaskState
from orchestrator.core.messages import (
    Decision,
    Disposition,
    Message,
    OperatorAction,
    OperatorRequest,
    StartSaga,
    StepReply,
    TimerFired,
)
from orchestrator.core.saga import HISTORY_LIMIT, Saga, SagaStatus
from orchestrator.core.yaml_source import load_documents

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

# -- machines -----------------------------------------------------------------------------

ORDER = """
machine: order
version: 1
initial: pay
states:
  pay:
    label: PAYMENT_PENDING
    command:
      service: payment
      name: execute_payment
      input: {order_id: $.order_id, amount: $.total}
    compensation:
      service: payment
      name: refund_payment
      input: {order_id: $.order_id}
      retry: {attempts: 2, backoff: 1s}
    timeout: 10s
    on:
      payment_executed: {goto: reserve, save_as: payment}
      payment_failed: compensate
  reserve:
    label: STOCK_PENDING
    command: {service: stock, name: reserve_stock, input: {order_id: $.order_id}}
    compensation: {service: stock, name: release_stock, input: {order_id: $.order_id}}
    timeout: 10s
    on:
      stock_reserved: {goto: ship, save_as: reservation}
      out_of_stock: compensate
  ship:
    command: {service: delivery, name: ship_order, input: {order_id: $.order_id}}
    timeout: 1m
    on:
      shipped: shipped
      delivery_failed: compensate
  shipped: {label: SHIPPED, final: succeeded}
"""

# Version 2 of the order machine has other states: a fraud check first, express shipping last.
ORDER_V2 = """
machine: order
version: 2
initial: fraud_check
states:
  fraud_check:
    command: {service: fraud, name: check_order, input: {order_id: $.order_id}}
    on: {cleared: pay, suspicious: compensate}
  pay:
    command: {service: payment, name: execute_payment, input: {order_id: $.order_id}}
    compensation: {service: payment, name: refund_payment, input: {order_id: $.order_id}}
    on: {payment_executed: ship_express, payment_failed: compensate}
  ship_express:
    command: {service: delivery, name: ship_express, input: {order_id: $.order_id}}
    on: {shipped: shipped}
  shipped: {final: succeeded}
"""

APPROVAL = """
machine: approval
version: 1
initial: quote
states:
  quote:
    command: {service: pricing, name: quote, input: {order_id: $.order_id}}
    on: {quoted: {goto: route, save_as: quote}}
  route:
    choice:
      - when: {path: $.quote.amount, gt: 1000}
        goto: manual_review
      - when: {path: $.quote.country, in: [NL, BE]}
        goto: auto_approve
    default: rejected
  manual_review:
    command: {service: review, name: review_order}
    on: {approved: approved, declined: rejected}
  auto_approve:
    command: {service: review, name: auto_approve}
    on: {approved: approved}
  approved: {final: succeeded}
  rejected: {final: compensated}
"""

OUTCOMES = """
machine: outcomes
version: 1
initial: review
states:
  review:
    command: {service: review, name: review}
    on: {approved: ok, declined: declined, broken: broken}
  ok: {final: succeeded}
  declined: {final: compensated}
  broken: {final: failed}
"""

TRIP = """
machine: trip
version: 1
initial: book
states:
  book:
    parallel:
      flight:
        command: {service: flights, name: book_flight, input: {trip_id: $.trip_id}}
        compensation: {service: flights, name: cancel_flight, input: {trip_id: $.trip_id}}
        timeout: 10s
        retry: {attempts: 1}
        on: {flight_booked: {result: done, save_as: flight}, no_seats: fail}
      hotel:
        command: {service: hotels, name: book_hotel}
        compensation: {service: hotels, name: cancel_hotel}
        timeout: 10s
        retry: {attempts: 1}
        on: {hotel_booked: done, no_rooms: fail}
      car:
        command: {service: cars, name: rent_car}
        timeout: 10s
        retry: {attempts: 1}
        on: {car_rented: done, no_cars: fail}
    then: pay
  pay:
    command: {service: payment, name: charge}
    on: {charged: booked, declined: compensate}
  booked: {final: succeeded}
"""

TRIP_GIVE_UP = (
    TRIP.replace("    then: pay\n", "    then: pay\n    on_failure: give_up\n")
    + "  give_up: {final: failed}\n"
)

CHARGE = """
machine: charge
version: 1
initial: reserve
states:
  reserve:
    command: {service: stock, name: reserve}
    compensation: {service: stock, name: release}
    on: {reserved: charge}
  charge:
    command: {service: payment, name: charge}
    compensation: {service: payment, name: refund}
    timeout: 10s
    retry: {attempts: 3, backoff: 2s}
    on: {charged: done, declined: compensate}
  done: {final: succeeded}
"""

CHARGE_NO_BACKOFF = CHARGE.replace("backoff: 2s", "backoff: 0s")

PING = """
machine: ping
version: 1
initial: reserve
states:
  reserve:
    command: {service: stock, name: reserve}
    compensation: {service: stock, name: release}
    on: {reserved: ping}
  ping:
    command: {service: monitor, name: ping}
    timeout: 5s
    retry: {attempts: 1}
    on: {pong: done}
    on_timeout: unreachable
  done: {final: succeeded}
  unreachable: {final: failed}
"""

POLL = """
machine: poll
version: 1
initial: poll
states:
  poll:
    command: {service: jobs, name: poll_job}
    on: {not_ready: poll, ready: done}
  done: {final: succeeded}
"""

ORDER_DATA = {"order_id": "o-1", "total": 250}


# -- helpers ------------------------------------------------------------------------------


def machine(text: str) -> MachineDefinition:
    (document,) = load_documents(text)
    return MachineDefinition.model_validate(document)


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def run(
    definition: MachineDefinition, saga: Saga | None, message: Message, now: dt.datetime = NOW
) -> Decision:
    """`decide()`, checking that the input saga is untouched and no-ops return it as it was."""
    before = None if saga is None else saga.model_dump()
    decision = decide(definition, saga, message, now)
    if saga is not None:
        assert saga.model_dump() == before, "decide() mutated the saga it was given"
    if not decision.changed:
        assert decision.saga is saga
        assert decision.commands == []
    return decision


def start(definition: MachineDefinition, data: dict[str, Any] | None = None) -> Saga:
    decision = run(definition, None, StartSaga("s1", definition.machine, dict(data or ORDER_DATA)))
    assert decision.disposition is Disposition.APPLIED
    return decision.saga


def reply(
    step: str,
    event: str,
    *,
    visit: int = 1,
    attempt: int = 1,
    payload: dict[str, Any] | None = None,
    rejected: bool = False,
) -> StepReply:
    return StepReply(step, visit, attempt, event, payload or {}, rejected=rejected)


def applied(
    definition: MachineDefinition, saga: Saga, message: Message, now: dt.datetime = NOW
) -> Decision:
    decision = run(definition, saga, message, now)
    assert decision.disposition is Disposition.APPLIED, decision.reason
    return decision


def operator(
    action: OperatorAction,
    request_id: str = "r1",
    *,
    compensate: bool = False,
    reason: str | None = None,
) -> OperatorRequest:
    return OperatorRequest(
        action,
        "alice",
        request_id,
        compensate=compensate,
        reason=reason,
    )


def steps(decision: Decision) -> list[str]:
    return [command.step for command in decision.commands]


def unchanged(decision: Decision, saga: Saga, disposition: Disposition) -> None:
    assert decision.disposition is disposition, decision.reason
    assert decision.saga is saga
    assert decision.commands == []


def order_at_ship(order: MachineDefinition) -> Saga:
    saga = start(order)
    saga = applied(
        order, saga, reply("pay", "payment_executed", payload={"payment_id": "p-1"})
    ).saga
    return applied(order, saga, reply("reserve", "stock_reserved", payload={"r": 1})).saga


def compensating_reserve(order: MachineDefinition) -> Saga:
    """Order saga whose ship step failed: compensate:reserve is in flight."""
    saga = order_at_ship(order)
    decision = applied(order, saga, reply("ship", "delivery_failed", rejected=True))
    assert steps(decision) == ["compensate:reserve"]
    return decision.saga


@pytest.fixture
def order() -> MachineDefinition:
    return machine(ORDER)


@pytest.fixture
def trip() -> MachineDefinition:
    return machine(TRIP)


# -- starting -----------------------------------------------------------------------------


def test_start_enters_initial_state_and_sends_its_command(order):
    decision = run(order, None, StartSaga("s1", "order", {"order_id": "o-1", "total": 250}))

    assert decision.disposition is Disposition.APPLIED
    saga = decision.saga
    assert (saga.saga_id, saga.machine, saga.machine_version) == ("s1", "order", 1)
    assert saga.status is SagaStatus.RUNNING
    assert saga.state == "pay"
    assert saga.label == "PAYMENT_PENDING"
    assert saga.data == {"order_id": "o-1", "total": 250}
    assert saga.created_at == saga.updated_at == NOW
    (command,) = decision.commands
    assert command.step == "pay"
    assert (command.service, command.name) == ("payment", "execute_payment")
    assert (command.visit, command.attempt) == (1, 1)
    assert command.idempotency_key == "s1:pay:1"
    assert command.message_id == "s1:pay:1:1"
    assert command.payload == {"order_id": "o-1", "amount": 250}
    assert command.compensates is None
    assert (command.saga_id, command.machine, command.version) == ("s1", "order", 1)
    (pending,) = saga.pending
    assert (pending.step, pending.visit, pending.attempt, pending.waiting) == (
        "pay",
        1,
        1,
        "reply",
    )
    assert pending.deadline == at(10)
    assert saga.deadline == at(10)
    assert saga.outbox == decision.commands
    assert saga.visits == {"pay": 1}


def test_a_repeated_start_is_a_duplicate_and_returns_the_saga_unchanged(order):
    saga = start(order)
    # The same data, its keys in another order: the same start.
    again = dict(reversed(list(ORDER_DATA.items())))

    decision = run(order, saga, StartSaga("s1", "order", again), at(5))

    unchanged(decision, saga, Disposition.DUPLICATE)


@pytest.mark.parametrize(
    ("machine_name", "data", "other"),
    [
        ("order", {"order_id": "other"}, "data"),
        ("order", {**ORDER_DATA, "total": 251}, "data"),
        ("refund", ORDER_DATA, "machine"),
    ],
)
def test_a_start_with_other_data_or_machine_for_an_existing_id_is_refused(
    order, machine_name, data, other
):
    saga = start(order)

    decision = run(order, saga, StartSaga("s1", machine_name, data), at(5))

    unchanged(decision, saga, Disposition.REFUSED)
    assert decision.reason is not None
    assert decision.reason.startswith(f"saga 's1' exists with other {other}: it was started as")


def test_a_start_for_a_saga_stored_without_a_start_digest_is_a_duplicate(order):
    """Sagas stored before digests were kept have nothing to compare a start with."""
    saga = start(order).model_copy(update={"start_digest": None})

    decision = run(order, saga, StartSaga("s1", "order", {"order_id": "other"}), at(5))

    unchanged(decision, saga, Disposition.DUPLICATE)


def test_start_does_not_share_data_with_the_start_message(order):
    data = {"order_id": "o-1", "total": 250, "items": [{"sku": "a"}]}
    message = StartSaga("s1", "order", data)
    saga = run(order, None, message).saga

    applied(order, saga, reply("pay", "payment_executed", payload={"payment_id": "p"}))

    assert message.data == {"order_id": "o-1", "total": 250, "items": [{"sku": "a"}]}


def test_a_message_other_than_start_needs_a_saga(order):
    with pytest.raises(ValueError, match="needs an existing saga"):
        decide(order, None, reply("pay", "payment_executed"), NOW)


# -- replies and final states ---------------------------------------------------------------


def test_reply_completes_the_step_saves_its_payload_and_sends_the_next_command(order):
    saga = start(order)

    decision = applied(
        order, saga, reply("pay", "payment_executed", payload={"payment_id": "p-1"}), at(3)
    )

    saga = decision.saga
    assert saga.state == "reserve"
    assert saga.label == "STOCK_PENDING"
    assert saga.data["payment"] == {"payment_id": "p-1"}
    assert [(c.step, c.visit, c.uncertain) for c in saga.completed] == [("pay", 1, False)]
    assert saga.completed[0].at == at(3)
    (command,) = decision.commands
    assert (command.step, command.idempotency_key, command.message_id) == (
        "reserve",
        "s1:reserve:1",
        "s1:reserve:1:1",
    )
    assert [p.step for p in saga.pending] == ["reserve"]
    assert saga.deadline == at(13)
    assert saga.updated_at == at(3)


def test_happy_path_ends_succeeded_with_nothing_pending(order):
    saga = order_at_ship(order)

    decision = applied(order, saga, reply("ship", "shipped"), at(30))

    saga = decision.saga
    assert decision.commands == []
    assert saga.status is SagaStatus.SUCCEEDED
    assert saga.state == "shipped"
    assert saga.label == "SHIPPED"
    assert saga.finished_at == at(30)
    assert saga.pending == []
    assert saga.deadline is None
    assert saga.flagged is None
    assert saga.compensation is None
    assert [c.step for c in saga.completed] == ["pay", "reserve", "ship"]
    assert saga.data["reservation"] == {"r": 1}


@pytest.mark.parametrize(
    ("event", "status", "flagged"),
    [
        ("approved", SagaStatus.SUCCEEDED, False),
        ("declined", SagaStatus.COMPENSATED, False),
        ("broken", SagaStatus.FAILED, True),
    ],
)
def test_final_states_set_their_outcome(event, status, flagged):
    outcomes = machine(OUTCOMES)
    saga = start(outcomes)

    decision = applied(outcomes, saga, reply("review", event), at(1))

    assert decision.saga.status is status
    assert decision.saga.finished_at == at(1)
    assert (decision.saga.flagged is not None) is flagged
    assert decision.commands == []


def test_a_rejected_reply_mapped_to_a_state_moves_on_without_completing_the_step(order):
    saga = start(order)

    decision = applied(order, saga, reply("pay", "payment_executed", rejected=True))

    assert decision.saga.state == "reserve"
    assert decision.saga.completed == []
    # So a later failure has nothing to compensate.
    decision = applied(order, decision.saga, reply("reserve", "out_of_stock", rejected=True))
    assert decision.commands == []
    assert decision.saga.status is SagaStatus.COMPENSATED


# -- business failures and compensation ----------------------------------------------------


def test_failure_of_the_first_step_ends_compensated_at_once(order):
    saga = start(order)

    decision = applied(order, saga, reply("pay", "payment_failed", rejected=True), at(2))

    saga = decision.saga
    assert decision.commands == []
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.finished_at == at(2)
    assert saga.pending == []
    assert saga.completed == []
    assert saga.flagged is None


def test_failure_of_the_second_step_compensates_the_first_only(order):
    saga = start(order)
    saga = applied(order, saga, reply("pay", "payment_executed", payload={"payment_id": "p"})).saga

    decision = applied(order, saga, reply("reserve", "out_of_stock", rejected=True), at(4))

    saga = decision.saga
    assert saga.status is SagaStatus.COMPENSATING
    (command,) = decision.commands
    assert command.step == "compensate:pay"
    assert (command.service, command.name) == ("payment", "refund_payment")
    assert command.visit == 1
    assert command.attempt == 1
    assert command.compensates == "s1:pay:1"
    assert command.idempotency_key == "s1:compensate:pay:1"
    assert command.message_id == "s1:compensate:pay:1:1"
    assert command.payload == {"order_id": "o-1"}
    assert [c.step for c in saga.compensation.remaining] == ["pay"]
    # The compensation's own timeout (default 30s) sets the deadline.
    assert saga.deadline == at(34)

    decision = applied(order, saga, reply("compensate:pay", "payment_refunded"), at(5))

    assert decision.commands == []
    assert decision.saga.status is SagaStatus.COMPENSATED
    assert decision.saga.compensation.done == ["pay"]
    assert decision.saga.compensation.remaining == []
    assert decision.saga.finished_at == at(5)


def test_failure_of_the_last_step_compensates_in_reverse_order_one_at_a_time(order):
    saga = order_at_ship(order)

    decision = applied(order, saga, reply("ship", "delivery_failed", rejected=True))
    assert steps(decision) == ["compensate:reserve"]
    assert decision.commands[0].compensates == "s1:reserve:1"

    decision = applied(order, decision.saga, reply("compensate:reserve", "stock_released"))
    assert steps(decision) == ["compensate:pay"]
    assert decision.saga.status is SagaStatus.COMPENSATING

    decision = applied(order, decision.saga, reply("compensate:pay", "payment_refunded"))
    assert decision.commands == []
    assert decision.saga.status is SagaStatus.COMPENSATED
    assert decision.saga.compensation.done == ["reserve", "pay"]


def test_a_rejected_event_the_state_does_not_name_still_compensates(order):
    saga = start(order)
    saga = applied(order, saga, reply("pay", "payment_executed")).saga

    decision = applied(order, saga, reply("reserve", "warehouse_on_fire", rejected=True))

    assert steps(decision) == ["compensate:pay"]
    assert [c.step for c in decision.saga.completed] == ["pay"]


def test_compensation_success_for_an_older_attempt_is_applied(order):
    """Attempt 1 was rejected, attempt 2 is out: a success naming attempt 1 still reports that
    the step was undone (a participant that retried it itself), so the compensation is done."""
    saga = compensating_reserve(order)
    saga = applied(order, saga, reply("compensate:reserve", "boom", rejected=True), at(1)).saga
    saga = applied(order, saga, TimerFired(), at(3)).saga
    assert saga.pending[0].attempt == 2

    decision = applied(order, saga, reply("compensate:reserve", "stock_released", attempt=1), at(4))

    assert decision.saga.compensation is not None
    assert decision.saga.compensation.done == ["reserve"]
    assert steps(decision) == ["compensate:pay"]


def test_compensation_rejection_for_an_older_attempt_counts_once(order):
    """Attempt 1 timed out and attempt 2 is out: attempt 1's late rejection is a failure that
    was counted already (by the timeout)."""
    saga = compensating_reserve(order)
    saga = applied(order, saga, TimerFired(), at(40)).saga  # attempt 1 timed out
    saga = applied(order, saga, TimerFired(), at(80)).saga  # backoff over: attempt 2 sent
    assert (saga.pending[0].attempt, saga.pending[0].waiting) == (2, "reply")

    decision = run(order, saga, reply("compensate:reserve", "boom", rejected=True), at(81))

    unchanged(decision, saga, Disposition.DUPLICATE)


# -- timeouts and retries -----------------------------------------------------------------


def test_timer_before_any_deadline_is_stale():
    charge = machine(CHARGE)
    saga = start(charge)

    unchanged(run(charge, saga, TimerFired(), at(29)), saga, Disposition.STALE)


def test_timeout_backs_off_then_retries_with_the_same_key_then_compensates():
    charge = machine(CHARGE)
    saga = start(charge)
    saga = applied(charge, saga, reply("reserve", "reserved")).saga
    assert saga.deadline == at(10)

    # Attempt 1 times out: wait 2s (backoff) before attempt 2, send nothing yet.
    decision = applied(charge, saga, TimerFired(), at(10))
    assert decision.commands == []
    (pending,) = decision.saga.pending
    assert (pending.waiting, pending.attempt) == ("backoff", 1)
    assert pending.deadline == decision.saga.deadline == at(12)

    # A timer fire before the backoff deadline changes nothing.
    unchanged(run(charge, decision.saga, TimerFired(), at(11)), decision.saga, Disposition.STALE)

    decision = applied(charge, decision.saga, TimerFired(), at(12))
    (command,) = decision.commands
    assert (command.step, command.attempt, command.visit) == ("charge", 2, 1)
    assert command.idempotency_key == "s1:charge:1"
    assert command.message_id == "s1:charge:1:2"
    assert decision.saga.pending[0].waiting == "reply"
    assert decision.saga.deadline == at(22)

    # Attempt 2 times out: the backoff doubles (2s * 2).
    decision = applied(charge, decision.saga, TimerFired(), at(22))
    assert decision.commands == []
    assert decision.saga.deadline == at(26)
    decision = applied(charge, decision.saga, TimerFired(), at(26))
    (command,) = decision.commands
    assert (command.attempt, command.idempotency_key, command.message_id) == (
        3,
        "s1:charge:1",
        "s1:charge:1:3",
    )

    # Attempt 3 times out: attempts used up. The charge may have happened: compensate it too.
    decision = applied(charge, decision.saga, TimerFired(), at(36))
    saga = decision.saga
    assert [(c.step, c.uncertain) for c in saga.completed] == [
        ("reserve", False),
        ("charge", True),
    ]
    assert saga.status is SagaStatus.COMPENSATING
    assert steps(decision) == ["compensate:charge"]
    assert decision.commands[0].compensates == "s1:charge:1"

    decision = applied(charge, saga, reply("compensate:charge", "refunded"), at(37))
    assert steps(decision) == ["compensate:reserve"]
    decision = applied(charge, decision.saga, reply("compensate:reserve", "released"), at(38))
    assert decision.saga.status is SagaStatus.COMPENSATED


def test_a_late_timer_counts_the_backoff_from_when_it_fired():
    charge = machine(CHARGE)
    saga = applied(charge, start(charge), reply("reserve", "reserved")).saga

    decision = applied(charge, saga, TimerFired(), at(15))

    assert decision.saga.deadline == at(17)


def test_no_backoff_sends_the_next_attempt_at_once():
    charge = machine(CHARGE_NO_BACKOFF)
    saga = applied(charge, start(charge), reply("reserve", "reserved")).saga

    decision = applied(charge, saga, TimerFired(), at(10))

    (command,) = decision.commands
    assert (command.step, command.attempt, command.message_id) == ("charge", 2, "s1:charge:1:2")
    assert decision.saga.pending[0].waiting == "reply"
    assert decision.saga.deadline == at(20)


def test_a_reply_to_the_timed_out_attempt_during_backoff_is_applied():
    charge = machine(CHARGE)
    saga = applied(charge, start(charge), reply("reserve", "reserved")).saga
    saga = applied(charge, saga, TimerFired(), at(10)).saga

    decision = applied(charge, saga, reply("charge", "charged"), at(11))

    assert decision.saga.status is SagaStatus.SUCCEEDED
    assert decision.commands == []


def test_a_late_reply_after_the_step_timed_out_for_good_changes_nothing():
    ping = machine(PING)
    saga = applied(ping, start(ping), reply("reserve", "reserved")).saga
    saga = applied(ping, saga, TimerFired(), at(5)).saga

    decision = run(ping, saga, reply("ping", "pong"), at(6))

    assert decision.disposition in (Disposition.DUPLICATE, Disposition.STALE)
    assert decision.saga is saga


def test_on_timeout_goes_to_its_target_state():
    ping = machine(PING)
    saga = applied(ping, start(ping), reply("reserve", "reserved")).saga
    assert saga.deadline == at(5)

    decision = applied(ping, saga, TimerFired(), at(5))

    saga = decision.saga
    assert decision.commands == []
    assert saga.state == "unreachable"
    assert saga.status is SagaStatus.FAILED
    assert saga.flagged is not None
    assert saga.finished_at == at(5)
    assert [(c.step, c.uncertain) for c in saga.completed] == [
        ("reserve", False),
        ("ping", True),
    ]


def test_timeout_of_a_step_without_compensation_compensates_the_earlier_ones(order):
    saga = order_at_ship(order)
    assert saga.deadline == at(60)
    # Default retry policy: 3 attempts, backoff 1s then 2s.
    saga = applied(order, saga, TimerFired(), at(60)).saga
    saga = applied(order, saga, TimerFired(), at(61)).saga
    saga = applied(order, saga, TimerFired(), at(121)).saga
    saga = applied(order, saga, TimerFired(), at(123)).saga
    assert saga.pending[0].attempt == 3

    decision = applied(order, saga, TimerFired(), at(183))

    assert steps(decision) == ["compensate:reserve"]
    assert decision.saga.completed[-1].step == "ship"
    assert decision.saga.completed[-1].uncertain


# -- failing compensations ------------------------------------------------------------------


def fail_reserve_compensation(order: MachineDefinition, saga: Saga) -> tuple[Saga, float]:
    """Reject every attempt of compensate:reserve until it gives up; returns saga and time."""
    retry = order.states["reserve"].compensation.retry
    assert retry.attempts == 5  # the default for compensations
    clock = 0.0
    for attempt in range(1, retry.attempts + 1):
        decision = applied(
            order,
            saga,
            reply("compensate:reserve", "still_shipping", attempt=attempt, rejected=True),
            at(clock),
        )
        saga = decision.saga
        assert decision.commands == []
        if attempt == retry.attempts:
            break
        assert saga.status is SagaStatus.COMPENSATING
        assert saga.deadline == at(clock + retry.delay_after(attempt))
        clock += retry.delay_after(attempt)
        decision = applied(order, saga, TimerFired(), at(clock))
        saga = decision.saga
        (command,) = decision.commands
        assert (command.step, command.attempt) == ("compensate:reserve", attempt + 1)
        assert command.idempotency_key == "s1:compensate:reserve:1"
    return saga, clock


def test_a_rejected_compensation_is_retried_then_the_saga_fails_flagged(order):
    saga, clock = fail_reserve_compensation(order, compensating_reserve(order))

    assert saga.status is SagaStatus.FAILED
    assert saga.flagged is not None
    assert saga.finished_at == at(clock)
    assert saga.pending == []
    assert saga.deadline is None
    assert [c.step for c in saga.compensation.remaining] == ["reserve", "pay"]


def test_compensation_timeouts_are_retried_then_the_saga_fails_flagged(order):
    saga = start(order)
    saga = applied(order, saga, reply("pay", "payment_executed")).saga
    saga = applied(order, saga, reply("reserve", "out_of_stock", rejected=True)).saga
    # compensate:pay: timeout 30s (default), 2 attempts, backoff 1s.
    assert saga.deadline == at(30)
    saga = applied(order, saga, TimerFired(), at(30)).saga
    assert saga.pending[0].waiting == "backoff"
    decision = applied(order, saga, TimerFired(), at(31))
    assert [(c.step, c.attempt) for c in decision.commands] == [("compensate:pay", 2)]

    decision = applied(order, decision.saga, TimerFired(), at(61))

    saga = decision.saga
    assert saga.status is SagaStatus.FAILED
    assert saga.flagged is not None
    assert [c.step for c in saga.compensation.remaining] == ["pay"]


def test_resume_resends_the_failed_compensation_with_a_newer_attempt_and_continues(order):
    saga, clock = fail_reserve_compensation(order, compensating_reserve(order))

    decision = applied(order, saga, operator("resume", reason="stock fixed"), at(clock + 60))

    saga = decision.saga
    (command,) = decision.commands
    assert command.step == "compensate:reserve"
    assert command.attempt == 6
    assert command.idempotency_key == "s1:compensate:reserve:1"
    assert command.message_id == "s1:compensate:reserve:1:6"
    assert saga.status is SagaStatus.COMPENSATING
    assert saga.flagged is None
    assert saga.finished_at is None
    entry = next(h for h in reversed(saga.history) if h.event == "resume_requested")
    assert entry.by == "alice"

    decision = applied(order, saga, reply("compensate:reserve", "released", attempt=6))
    assert steps(decision) == ["compensate:pay"]
    decision = applied(order, decision.saga, reply("compensate:pay", "refunded"))
    assert decision.saga.status is SagaStatus.COMPENSATED
    assert decision.saga.compensation.done == ["reserve", "pay"]


def test_a_duplicate_of_a_rejected_compensation_reply_changes_nothing(order):
    saga = compensating_reserve(order)
    rejected = reply("compensate:reserve", "still_shipping", rejected=True)
    saga = applied(order, saga, rejected, at(0)).saga
    assert saga.pending[0].waiting == "backoff"
    assert saga.deadline == at(2)

    # The broker redelivers the same reply a second later, while the retry waits.
    decision = run(order, saga, rejected, at(1))

    unchanged(decision, saga, Disposition.DUPLICATE)


def test_a_late_reply_to_a_timed_out_compensation_attempt(order):
    saga = compensating_reserve(order)
    # compensate:reserve attempt 1 times out (30s by default) and waits 2s before attempt 2.
    saga = applied(order, saga, TimerFired(), at(30)).saga
    assert saga.pending[0].waiting == "backoff"

    # A late rejection counts for nothing more: that attempt has failed already.
    late_rejection = reply("compensate:reserve", "still_shipping", rejected=True)
    decision = run(order, saga, late_rejection, at(31))
    assert decision.disposition in (Disposition.DUPLICATE, Disposition.STALE)
    assert decision.saga is saga
    # A late success still counts: the compensation took effect, go on with the next one.
    decision = applied(order, saga, reply("compensate:reserve", "released"), at(31))
    assert steps(decision) == ["compensate:pay"]


@pytest.mark.parametrize("where", ["running", "succeeded", "compensated", "final_failed"])
def test_resume_is_refused_unless_a_compensation_gave_up(order, where):
    if where == "running":
        definition, saga = order, start(order)
    elif where == "succeeded":
        definition = order
        saga = applied(order, order_at_ship(order), reply("ship", "shipped")).saga
    elif where == "compensated":
        definition = order
        saga = applied(order, start(order), reply("pay", "payment_failed", rejected=True)).saga
    else:
        definition = machine(OUTCOMES)
        saga = applied(definition, start(definition), reply("review", "broken")).saga
        assert saga.status is SagaStatus.FAILED

    unchanged(run(definition, saga, operator("resume")), saga, Disposition.REFUSED)


def test_resume_after_a_failed_abort_compensation_ends_aborted(order):
    saga = order_at_ship(order)
    decision = applied(order, saga, operator("abort", "r1", compensate=True))
    assert steps(decision) == ["compensate:reserve"]
    saga, clock = fail_reserve_compensation(order, decision.saga)
    assert saga.status is SagaStatus.FAILED

    saga = applied(order, saga, operator("resume", "r2"), at(clock + 1)).saga
    saga = applied(order, saga, reply("compensate:reserve", "released", attempt=6)).saga
    decision = applied(order, saga, reply("compensate:pay", "refunded"))

    assert decision.saga.status is SagaStatus.ABORTED


# -- choice states ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quote", "state", "command"),
    [
        ({"amount": 5000, "country": "NL"}, "manual_review", "review_order"),  # first match wins
        ({"amount": 5000, "country": "US"}, "manual_review", "review_order"),
        ({"amount": 10, "country": "BE"}, "auto_approve", "auto_approve"),
    ],
)
def test_choice_takes_the_first_matching_rule_on_entry(quote, state, command):
    approval = machine(APPROVAL)
    saga = start(approval)

    decision = applied(approval, saga, reply("quote", "quoted", payload=quote))

    assert decision.saga.state == state
    assert [c.name for c in decision.commands] == [command]
    assert decision.saga.status is SagaStatus.RUNNING


def test_choice_with_no_match_takes_the_default_even_into_a_final_state():
    approval = machine(APPROVAL)
    saga = start(approval)

    decision = applied(approval, saga, reply("quote", "quoted", payload={"amount": 10}), at(1))

    assert decision.commands == []
    assert decision.saga.state == "rejected"
    assert decision.saga.status is SagaStatus.COMPENSATED
    assert decision.saga.finished_at == at(1)
    assert "route" not in decision.saga.visits


# -- parallel states ----------------------------------------------------------------------


def test_parallel_state_sends_one_command_per_branch(trip):
    decision = run(trip, None, StartSaga("s1", "trip", {"trip_id": "t-1"}))

    assert steps(decision) == ["book.flight", "book.hotel", "book.car"]
    assert [c.idempotency_key for c in decision.commands] == [
        "s1:book.flight:1",
        "s1:book.hotel:1",
        "s1:book.car:1",
    ]
    assert {(c.visit, c.attempt) for c in decision.commands} == {(1, 1)}
    assert decision.commands[0].payload == {"trip_id": "t-1"}
    assert decision.saga.deadline == at(10)


def test_parallel_state_joins_when_every_branch_is_done(trip):
    saga = start(trip, {"trip_id": "t-1"})

    decision = applied(trip, saga, reply("book.hotel", "hotel_booked"))
    assert decision.commands == []
    decision = applied(
        trip, decision.saga, reply("book.flight", "flight_booked", payload={"seat": "1A"})
    )
    assert decision.commands == []
    assert decision.saga.state == "book"
    decision = applied(trip, decision.saga, reply("book.car", "car_rented"))

    assert steps(decision) == ["pay"]
    assert decision.saga.state == "pay"
    assert decision.saga.data["flight"] == {"seat": "1A"}
    assert [c.step for c in decision.saga.completed] == ["book.hotel", "book.flight", "book.car"]


@pytest.mark.parametrize("rejected", [True, False], ids=["rejected", "fail_result"])
def test_a_failed_branch_waits_for_the_others_then_compensates_in_reverse(trip, rejected):
    saga = start(trip, {"trip_id": "t-1"})

    decision = applied(trip, saga, reply("book.car", "no_cars", rejected=rejected))
    assert decision.commands == []
    assert decision.saga.status is SagaStatus.RUNNING
    assert sorted(p.step for p in decision.saga.pending) == ["book.flight", "book.hotel"]
    decision = applied(trip, decision.saga, reply("book.hotel", "hotel_booked"), at(1))
    assert decision.commands == []

    decision = applied(trip, decision.saga, reply("book.flight", "flight_booked"), at(2))

    assert steps(decision) == ["compensate:book.flight"]
    assert decision.commands[0].compensates == "s1:book.flight:1"
    assert decision.saga.status is SagaStatus.COMPENSATING
    decision = applied(trip, decision.saga, reply("compensate:book.flight", "cancelled"))
    assert steps(decision) == ["compensate:book.hotel"]
    decision = applied(trip, decision.saga, reply("compensate:book.hotel", "cancelled"))
    assert decision.commands == []
    assert decision.saga.status is SagaStatus.COMPENSATED
    assert "book.car" not in [c.step for c in decision.saga.completed]


def test_a_timed_out_branch_is_compensated_with_the_completed_ones(trip):
    saga = start(trip, {"trip_id": "t-1"})
    saga = applied(trip, saga, reply("book.hotel", "hotel_booked"), at(1)).saga
    saga = applied(trip, saga, reply("book.car", "car_rented"), at(2)).saga

    decision = applied(trip, saga, TimerFired(), at(10))

    assert [(c.step, c.uncertain) for c in decision.saga.completed] == [
        ("book.hotel", False),
        ("book.car", False),
        ("book.flight", True),
    ]
    assert steps(decision) == ["compensate:book.flight"]
    decision = applied(trip, decision.saga, reply("compensate:book.flight", "cancelled"))
    assert steps(decision) == ["compensate:book.hotel"]


def test_all_branches_timing_out_at_once_compensates_those_with_compensations(trip):
    saga = start(trip, {"trip_id": "t-1"})

    decision = applied(trip, saga, TimerFired(), at(10))

    assert {c.step for c in decision.saga.completed} == {"book.flight", "book.hotel", "book.car"}
    assert all(c.uncertain for c in decision.saga.completed)
    assert steps(decision) == ["compensate:book.hotel"]
    assert [c.step for c in decision.saga.compensation.remaining] == ["book.hotel", "book.flight"]


def test_parallel_on_failure_goes_to_its_target():
    trip = machine(TRIP_GIVE_UP)
    saga = start(trip, {"trip_id": "t-1"})
    saga = applied(trip, saga, reply("book.flight", "flight_booked")).saga
    saga = applied(trip, saga, reply("book.hotel", "no_rooms", rejected=True)).saga

    decision = applied(trip, saga, reply("book.car", "car_rented"))

    assert decision.commands == []
    assert decision.saga.state == "give_up"
    assert decision.saga.status is SagaStatus.FAILED
    assert decision.saga.flagged is not None
    assert decision.saga.parallel_failure is None


def test_a_duplicate_branch_reply_changes_nothing(trip):
    saga = start(trip, {"trip_id": "t-1"})
    saga = applied(trip, saga, reply("book.hotel", "hotel_booked")).saga

    decision = run(trip, saga, reply("book.hotel", "hotel_booked"), at(1))

    unchanged(decision, saga, Disposition.DUPLICATE)


def test_an_unexpected_branch_event_is_recorded_and_the_branch_stays_pending(trip):
    saga = start(trip, {"trip_id": "t-1"})

    decision = run(trip, saga, reply("book.hotel", "pool_closed"))

    assert decision.disposition is Disposition.UNEXPECTED
    assert decision.saga.unexpected_events == 1
    assert decision.saga.pending_step("book.hotel") is not None
    assert decision.commands == []


# -- duplicates, stale and invalid messages ---------------------------------------------------


def test_a_second_identical_reply_is_a_duplicate(order):
    saga = start(order)
    saga = applied(order, saga, reply("pay", "payment_executed", payload={"payment_id": "p"})).saga

    decision = run(order, saga, reply("pay", "payment_executed", payload={"payment_id": "p"}))

    unchanged(decision, saga, Disposition.DUPLICATE)


def test_a_second_identical_rejected_reply_is_a_duplicate(order):
    saga = start(order)
    saga = applied(order, saga, reply("pay", "payment_executed")).saga
    failed = reply("reserve", "out_of_stock", rejected=True)
    saga = applied(order, saga, failed).saga
    assert saga.status is SagaStatus.COMPENSATING

    decision = run(order, saga, failed, at(1))

    unchanged(decision, saga, Disposition.DUPLICATE)


def test_a_second_identical_compensation_reply_is_a_duplicate(order):
    saga = compensating_reserve(order)
    done = reply("compensate:reserve", "released")
    saga = applied(order, saga, done).saga

    unchanged(run(order, saga, done, at(1)), saga, Disposition.DUPLICATE)


def test_a_reply_for_an_older_attempt_of_the_current_visit_is_applied():
    """Attempt 2 went out after attempt 1 timed out; attempt 1's reply, late, carries the same
    idempotency key and reports the visit's one effect: it is applied, and attempt 2's reply
    is then a duplicate."""
    charge = machine(CHARGE_NO_BACKOFF)
    saga = applied(charge, start(charge), reply("reserve", "reserved")).saga
    saga = applied(charge, saga, TimerFired(), at(10)).saga
    assert saga.pending[0].attempt == 2

    decision = applied(charge, saga, reply("charge", "charged", attempt=1), at(11))

    assert decision.saga.status is SagaStatus.SUCCEEDED
    assert [c.step for c in decision.saga.completed] == ["reserve", "charge"]
    replied = [h for h in decision.saga.history if h.event == "replied" and h.step == "charge"]
    assert [h.attempt for h in replied] == [1]
    second = run(charge, decision.saga, reply("charge", "charged", attempt=2), at(12))
    unchanged(second, decision.saga, Disposition.DUPLICATE)


def test_a_reply_for_an_older_visit_is_stale():
    poll = machine(POLL)
    saga = start(poll)
    decision = applied(poll, saga, reply("poll", "not_ready"))
    (command,) = decision.commands
    assert (command.visit, command.idempotency_key) == (2, "s1:poll:2")
    saga = decision.saga

    unchanged(run(poll, saga, reply("poll", "ready", visit=1)), saga, Disposition.STALE)

    decision = applied(poll, saga, reply("poll", "ready", visit=2))
    assert decision.saga.status is SagaStatus.SUCCEEDED
    assert [(c.step, c.visit) for c in decision.saga.completed] == [("poll", 1), ("poll", 2)]


@pytest.mark.parametrize(("visit", "attempt"), [(1, 2), (2, 1)], ids=["attempt", "visit"])
def test_a_reply_for_a_newer_attempt_or_visit_than_sent_is_invalid(order, visit, attempt):
    saga = start(order)

    decision = run(order, saga, reply("pay", "payment_executed", visit=visit, attempt=attempt))

    unchanged(decision, saga, Disposition.INVALID)


@pytest.mark.parametrize("step", ["refund", "compensate:ship", "compensate:nothing", "book.car"])
def test_a_reply_naming_a_step_the_machine_does_not_have_is_invalid(order, step):
    saga = start(order)

    unchanged(run(order, saga, reply(step, "whatever")), saga, Disposition.INVALID)


def test_a_reply_naming_another_machine_is_invalid(order):
    saga = start(order)
    message = StepReply("pay", 1, 1, "payment_executed", {}, machine="invoice")

    unchanged(run(order, saga, message), saga, Disposition.INVALID)


def test_a_reply_for_a_step_that_is_not_pending_is_stale(order):
    saga = start(order)

    unchanged(run(order, saga, reply("ship", "shipped")), saga, Disposition.STALE)
    unchanged(run(order, saga, reply("compensate:pay", "refunded")), saga, Disposition.STALE)


def test_messages_to_a_finished_saga_change_nothing(order):
    saga = applied(order, order_at_ship(order), reply("ship", "shipped")).saga

    for message in (reply("ship", "shipped"), reply("pay", "payment_failed"), TimerFired()):
        decision = run(order, saga, message, at(3600))
        assert decision.disposition in (Disposition.DUPLICATE, Disposition.STALE)
        assert decision.saga is saga


# -- unexpected events --------------------------------------------------------------------


def test_an_unexpected_event_is_recorded_and_the_step_stays_pending(order):
    saga = start(order)

    decision = run(order, saga, reply("pay", "payment_pending"), at(1))

    assert decision.disposition is Disposition.UNEXPECTED
    assert decision.commands == []
    new = decision.saga
    assert new is not saga
    assert new.unexpected_events == 1
    assert new.history[-1].event == "unexpected_event"
    assert new.history[-1].step == "pay"
    assert "payment_pending" in new.history[-1].detail
    assert new.pending == saga.pending
    assert new.state == "pay"
    assert new.outbox == saga.outbox
    # The step still completes normally afterwards.
    decision = applied(order, new, reply("pay", "payment_executed"), at(2))
    assert steps(decision) == ["reserve"]


# -- operators ----------------------------------------------------------------------------


def test_abort_without_compensation_ends_aborted_at_once(order):
    saga = order_at_ship(order)

    decision = applied(order, saga, operator("abort", reason="customer called"), at(7))

    saga = decision.saga
    assert decision.commands == []
    assert saga.status is SagaStatus.ABORTED
    assert saga.pending == []
    assert saga.deadline is None
    assert saga.finished_at == at(7)
    entry = next(h for h in saga.history if h.event == "abort_requested")
    assert entry.by == "alice"
    assert "customer called" in entry.detail


def test_abort_with_compensation_undoes_the_in_flight_step_too(order):
    saga = start(order)
    saga = applied(order, saga, reply("pay", "payment_executed")).saga

    decision = applied(order, saga, operator("abort", compensate=True), at(1))

    saga = decision.saga
    assert [(c.step, c.uncertain) for c in saga.completed] == [
        ("pay", False),
        ("reserve", True),
    ]
    assert steps(decision) == ["compensate:reserve"]
    assert saga.status is SagaStatus.COMPENSATING
    decision = applied(order, saga, reply("compensate:reserve", "released"))
    assert steps(decision) == ["compensate:pay"]
    decision = applied(order, decision.saga, reply("compensate:pay", "refunded"), at(2))
    assert decision.saga.status is SagaStatus.ABORTED
    assert decision.saga.finished_at == at(2)


def test_abort_with_compensation_skips_an_in_flight_step_without_one(order):
    saga = order_at_ship(order)

    decision = applied(order, saga, operator("abort", compensate=True))

    assert steps(decision) == ["compensate:reserve"]
    assert "ship" not in [c.step for c in decision.saga.completed]


def test_abort_with_compensation_and_nothing_to_undo_ends_aborted_at_once():
    outcomes = machine(OUTCOMES)
    saga = start(outcomes)

    decision = applied(outcomes, saga, operator("abort", compensate=True))

    assert decision.commands == []
    assert decision.saga.status is SagaStatus.ABORTED


def test_abort_with_compensation_in_a_parallel_state(trip):
    saga = start(trip, {"trip_id": "t-1"})
    saga = applied(trip, saga, reply("book.flight", "flight_booked")).saga

    decision = applied(trip, saga, operator("abort", compensate=True))

    # The in-flight hotel booking is undone first, then the completed flight; the car has no
    # compensation.
    assert steps(decision) == ["compensate:book.hotel"]
    assert [c.step for c in decision.saga.compensation.remaining] == ["book.hotel", "book.flight"]


@pytest.mark.parametrize("compensate", [False, True])
def test_abort_of_a_finished_saga_is_refused(order, compensate):
    saga = applied(order, start(order), reply("pay", "payment_failed", rejected=True)).saga

    decision = run(order, saga, operator("abort", compensate=compensate))

    unchanged(decision, saga, Disposition.REFUSED)


def test_retry_resends_every_pending_step_with_the_next_attempt(trip):
    saga = start(trip, {"trip_id": "t-1"})
    saga = applied(trip, saga, reply("book.car", "car_rented")).saga

    decision = applied(trip, saga, operator("retry", reason="flights api was down"), at(5))

    assert [(c.step, c.attempt, c.idempotency_key, c.message_id) for c in decision.commands] == [
        ("book.flight", 2, "s1:book.flight:1", "s1:book.flight:1:2"),
        ("book.hotel", 2, "s1:book.hotel:1", "s1:book.hotel:1:2"),
    ]
    assert decision.saga.deadline == at(15)
    retries = [h for h in decision.saga.history if h.event == "retry_requested"]
    assert [(h.step, h.by) for h in retries] == [("book.flight", "alice"), ("book.hotel", "alice")]
    # A reply to either attempt of the visit applies: both carry the same idempotency key.
    applied(trip, decision.saga, reply("book.flight", "flight_booked"))
    applied(trip, decision.saga, reply("book.flight", "flight_booked", attempt=2))


def test_retry_of_a_step_in_backoff_sends_it_now():
    charge = machine(CHARGE)
    saga = applied(charge, start(charge), reply("reserve", "reserved")).saga
    saga = applied(charge, saga, TimerFired(), at(10)).saga

    decision = applied(charge, saga, operator("retry"), at(11))

    assert [(c.step, c.attempt) for c in decision.commands] == [("charge", 2)]
    assert decision.saga.pending[0].waiting == "reply"


def test_retry_of_a_finished_saga_is_refused(order):
    saga, _ = fail_reserve_compensation(order, compensating_reserve(order))

    unchanged(run(order, saga, operator("retry")), saga, Disposition.REFUSED)


def test_retry_with_nothing_pending_is_refused(order):
    saga = start(order).model_copy(update={"pending": []})

    unchanged(run(order, saga, operator("retry")), saga, Disposition.REFUSED)


@pytest.mark.parametrize("action", ["abort", "retry"])
def test_a_repeated_operator_request_is_a_duplicate(order, action):
    saga = start(order)
    saga = applied(order, saga, operator(action, "req-7")).saga

    decision = run(order, saga, operator(action, "req-7"), at(1))

    unchanged(decision, saga, Disposition.DUPLICATE)


def test_a_refused_request_is_not_remembered(order):
    saga = applied(order, start(order), operator("abort", "req-1")).saga

    decision = run(order, saga, operator("abort", "req-2", compensate=True))

    unchanged(decision, saga, Disposition.REFUSED)
    assert saga.recent_requests == ["req-1"]


# -- history and immutability ---------------------------------------------------------------


def test_history_is_bounded_and_counts_what_it_dropped(order):
    saga = start(order)
    total = len(saga.history)
    for n in range(1, 80):
        moment = at(n)
        decision = run(order, saga, reply("pay", f"odd_event_{n}"), moment)
        assert decision.disposition is Disposition.UNEXPECTED
        added = sum(1 for h in decision.saga.history if h.at == moment)
        assert added >= 1
        total += added
        saga = decision.saga
        assert len(saga.history) == min(total, HISTORY_LIMIT)
        assert saga.history_dropped == max(0, total - HISTORY_LIMIT)

    assert saga.history_dropped > 0
    assert saga.history[-1].event == "unexpected_event"
    assert saga.history[-1].detail is not None
    assert "odd_event_79" in saga.history[-1].detail
    assert saga.unexpected_events == 79


def test_decide_never_mutates_the_saga_it_is_given(order):
    saga = order_at_ship(order)
    snapshot = saga.model_dump()

    for message in (
        reply("ship", "shipped"),
        reply("ship", "delivery_failed", rejected=True),
        reply("ship", "surprise"),
        TimerFired(),
        operator("abort"),
        operator("abort", "r2", compensate=True),
        operator("retry", "r3"),
    ):
        decision = decide(order, saga, message, at(600))
        assert decision.saga is not saga or not decision.changed
        assert saga.model_dump() == snapshot


# -- versions -----------------------------------------------------------------------------


def test_decide_refuses_a_definition_of_another_version(order):
    v2 = machine(ORDER_V2)
    saga = start(order)

    with pytest.raises(ValueError, match="runs order v1, not order v2"):
        decide(v2, saga, reply("pay", "payment_executed"), NOW)


def test_a_running_saga_keeps_its_version_after_a_new_one_exists():
    v1, v2 = (MachineDefinition.model_validate(d) for d in load_documents(ORDER + "---" + ORDER_V2))
    old = start(v1)
    new = run(v2, None, StartSaga("s2", "order", dict(ORDER_DATA))).saga
    assert (new.machine_version, new.state) == (2, "fraud_check")

    # The v1 saga goes on through v1's states, not v2's (pay -> ship_express in v2).
    decision = applied(v1, old, reply("pay", "payment_executed"))
    assert (decision.saga.machine_version, decision.saga.state) == (1, "reserve")
    assert steps(decision) == ["reserve"]
    assert decision.commands[0].version == 1
    # A step that exists only in v2 is unknown to the v1 saga.
    unchanged(run(v1, old, reply("fraud_check", "cleared")), old, Disposition.INVALID)
    with pytest.raises(ValueError, match="runs order v1"):
        decide(v2, old, reply("pay", "payment_executed"), NOW)


def test_choice_definition_fixture_is_a_task_then_choice():
    # Guards the machines above against silent YAML 1.1 surprises (`on:` parsed as True).
    approval = machine(APPROVAL)
    quote = approval.states["quote"]
    assert isinstance(quote, TaskState)
    assert "quoted" in quote.on
