"""Example-based tests of `decide()`: operator requests: abort, retry, and their deduplication.

See decide_support.py for the machines and for `run()`, which checks every call.
"""

from __future__ import annotations

import pytest
from decide_support import (
    CHARGE,
    OUTCOMES,
    applied,
    at,
    compensating_reserve,
    fail_reserve_compensation,
    machine,
    operator,
    order_at_ship,
    reply,
    run,
    start,
    steps,
    unchanged,
)

from orchestrator.core.messages import Disposition, TimerFired
from orchestrator.core.saga import SagaStatus

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
