"""`count_from_confirm`: a step's deadline runs from the broker's confirm of its command."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from orchestrator.core.confirm import CONFIRM_SLACK_SECONDS, count_from_confirm
from orchestrator.core.decide import decide
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.machines import load_machines
from orchestrator.core.messages import StartSaga, TimerFired
from orchestrator.core.saga import Saga
from orchestrator.demo.participants import example_order

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
ORDER = load_machines(Path(__file__).resolve().parents[2] / "machines").latest("order")


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def started(definition: MachineDefinition = ORDER) -> Saga:
    return decide(definition, None, StartSaga("o-1", "order", example_order("o-1")), NOW).saga


def sent(saga: Saga) -> set[str]:
    return {command.message_id for command in saga.outbox}


def test_a_confirm_within_the_slack_leaves_the_saga_as_decided() -> None:
    saga = started()
    # execute_payment: 30 s timeout, so the slack is max(1 s, 3 s) = 3 s.
    assert count_from_confirm(ORDER, saga, sent(saga), at(2.9)) is None


@pytest.mark.parametrize("late", [3.5, 45.0, 3600.0])
def test_a_late_confirm_moves_the_deadline_to_count_from_it(late: float) -> None:
    saga = started()
    before = saga.model_copy(deep=True)

    moved = count_from_confirm(ORDER, saga, sent(saga), at(late))

    assert moved is not None
    (step,) = moved.pending
    assert step.deadline == at(late + 30)
    assert step.sent_at == at(late)
    assert moved.deadline == at(late + 30)
    entry = moved.history[-1]
    assert (entry.event, entry.step, entry.attempt) == (
        "command_confirmed_late",
        "execute_payment",
        1,
    )
    assert entry.detail is not None
    assert entry.detail.startswith(f"confirmed {late:.1f}s after it was saved")
    assert saga == before  # the input is not modified


def test_only_the_steps_whose_commands_were_confirmed_move() -> None:
    saga = started()
    assert count_from_confirm(ORDER, saga, {"some-other-command:1"}, at(60)) is None


def test_a_step_waiting_out_its_backoff_has_no_command_to_count_from() -> None:
    saga = started()
    timed_out = decide(ORDER, saga, TimerFired(), at(31)).saga  # backoff 2 s before attempt 2
    (step,) = timed_out.pending
    assert step.waiting == "backoff"
    assert count_from_confirm(ORDER, timed_out, sent(saga), at(60)) is None


def test_the_slack_is_at_least_a_second() -> None:
    """Steps of 5 s: a tenth would be half a second, the slack is a second."""
    short = load_machines(Path(__file__).resolve().parents[1] / "e2e" / "machines_confirm")
    definition = short.latest("order")
    saga = started(definition)
    assert CONFIRM_SLACK_SECONDS == 1.0
    assert count_from_confirm(definition, saga, sent(saga), at(0.9)) is None
    moved = count_from_confirm(definition, saga, sent(saga), at(1.1))
    assert moved is not None
    assert moved.deadline == at(1.1 + 5)
