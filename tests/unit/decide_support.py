"""Machines and helpers shared by the example-based tests of `decide()` (test_decide_*.py).

Every call goes through `run()`, which also checks that `decide()` left its input saga as it was
and that a message which changed nothing returned that very saga object with no commands.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from orchestrator.core.decide import decide
from orchestrator.core.definition import MachineDefinition
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
from orchestrator.core.saga import Saga, SagaStatus
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
