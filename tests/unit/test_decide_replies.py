"""Example-based tests of `decide()`: replies that complete steps and reach final states;
duplicate, stale, invalid and unexpected messages; the bounded history.

See decide_support.py for the machines and for `run()`, which checks every call.
"""

from __future__ import annotations

import pytest
from decide_support import (
    CHARGE_NO_BACKOFF,
    OUTCOMES,
    POLL,
    applied,
    at,
    compensating_reserve,
    machine,
    operator,
    order_at_ship,
    reply,
    run,
    start,
    steps,
    unchanged,
)

from orchestrator.core.decide import decide
from orchestrator.core.messages import Disposition, StepReply, TimerFired
from orchestrator.core.saga import HISTORY_LIMIT, SagaStatus

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
