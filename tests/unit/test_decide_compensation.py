"""Example-based tests of `decide()`: business failures and compensation, and compensations
that fail in turn.

See decide_support.py for the machines and for `run()`, which checks every call.
"""

from __future__ import annotations

import pytest
from decide_support import (
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


# -- failing compensations ------------------------------------------------------------------


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
