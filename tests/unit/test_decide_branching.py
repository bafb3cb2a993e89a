"""Example-based tests of `decide()`: choice states and parallel states.

See decide_support.py for the machines and for `run()`, which checks every call.
"""

from __future__ import annotations

import pytest
from decide_support import (
    APPROVAL,
    TRIP_GIVE_UP,
    applied,
    at,
    machine,
    reply,
    run,
    start,
    steps,
    unchanged,
)

from orchestrator.core.definition import TaskState
from orchestrator.core.messages import Disposition, StartSaga, TimerFired
from orchestrator.core.saga import SagaStatus

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


def test_choice_definition_fixture_is_a_task_then_choice():
    # Guards the machines above against silent YAML 1.1 surprises (`on:` parsed as True).
    approval = machine(APPROVAL)
    quote = approval.states["quote"]
    assert isinstance(quote, TaskState)
    assert "quoted" in quote.on
