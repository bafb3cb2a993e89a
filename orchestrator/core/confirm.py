"""A step's deadline runs from the broker's confirm of its command, not from the save.

`decide()` sets each deadline from the moment it decides, and the runtime publishes the commands
right after the save, so the two moments are usually milliseconds apart. When they are not (a
daemon killed between the save and the publish, whose successor publishes the outbox on
recovery; a broker that took long to confirm), the participant has had nothing to work with yet:
`count_from_confirm` moves such deadlines to count from the confirm (invariant 11).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from orchestrator.core.definition import MachineDefinition
from orchestrator.core.saga import PendingStep, Saga
from orchestrator.core.steps import Transitions

CONFIRM_SLACK_SECONDS = 1.0
"""A confirm later than a tenth of the step's timeout (and at least this) after the decision
moves the deadline, at the cost of one more write; a quicker one leaves it as decided. The
slack grows with the timeout so that a database slow to save under load (a save is part of the
time between the decision and the confirm) does not add a write to every step: a deadline
loses at most a tenth of its timeout, while one published after a restart gets all of it."""


def _command_id(pending: PendingStep) -> str:
    return f"{pending.idempotency_key}:{pending.attempt}"


def count_from_confirm(
    definition: MachineDefinition, saga: Saga, confirmed: Collection[str], at: dt.datetime
) -> Saga | None:
    """The saga with the deadlines of the steps whose commands (message ids in `confirmed`) the
    broker confirmed at `at` counted from then, if any was confirmed later than its slack; else
    None (the saga stays as it is). The input saga is not modified."""
    policies = Transitions(definition, saga, at)
    late: dict[str, float] = {}  # step -> its timeout
    for pending in saga.pending:
        elapsed = (at - pending.sent_at).total_seconds()
        # Under a second is never late: the common case costs no lookup of the step's policy.
        if elapsed <= CONFIRM_SLACK_SECONDS or pending.waiting != "reply":
            continue
        if _command_id(pending) not in confirmed:
            continue
        timeout, _ = policies.policy(pending)
        if elapsed > max(CONFIRM_SLACK_SECONDS, timeout / 10):
            late[pending.step] = timeout
    if not late:
        return None
    run = Transitions(definition, saga.fork(), at)
    for pending in run.saga.pending:
        if pending.step not in late:
            continue
        timeout = late[pending.step]
        delay = (at - pending.sent_at).total_seconds()
        pending.sent_at = at
        pending.deadline = at + dt.timedelta(seconds=timeout)
        run.record(
            "command_confirmed_late",
            step=pending.step,
            attempt=pending.attempt,
            detail=f"confirmed {delay:.1f}s after it was saved; its {timeout:g}s timeout "
            "counts from the confirm",
        )
    run.saga.refresh_deadline()
    run.saga.updated_at = at
    return run.saga
