"""Example-based tests of `decide()`: timeouts, retries and their backoff.

See decide_support.py for the machines and for `run()`, which checks every call.
"""

from __future__ import annotations

from decide_support import (
    CHARGE,
    CHARGE_NO_BACKOFF,
    PING,
    applied,
    at,
    machine,
    order_at_ship,
    reply,
    run,
    start,
    steps,
    unchanged,
)

from orchestrator.core.messages import Disposition, TimerFired
from orchestrator.core.saga import SagaStatus

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
