"""A choice whose condition meets saga data of another kind fails the saga for an operator; it
never takes the default branch (DESIGN.md invariant 13)."""

from __future__ import annotations

from typing import Any

import pytest
from decide_support import NOW, machine

from orchestrator.core.decide import decide
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.messages import Decision, Disposition, StartSaga, StepReply
from orchestrator.core.saga import Saga, SagaStatus

# Large amounts go through a compliance check; the rest are approved at once.
COMPLIANCE = """
machine: compliance
version: 1
initial: route
states:
  route:
    choice:
      - when: {path: $.amount, gt: 5000}
        goto: compliance_check
    default: approve
  compliance_check:
    command: {service: compliance, name: check, input: {amount: $.amount}}
    on: {cleared: approve, blocked: compensate}
  approve:
    command: {service: payment, name: approve, input: {amount: "$.amount?"}}
    on: {approved: done}
  done: {final: succeeded}
"""

# The same test after a step that was done: the saga fails, it does not end compensated.
AFTER_A_STEP = """
machine: after_step
version: 1
initial: quote
states:
  quote:
    command: {service: pricing, name: quote}
    compensation: {service: pricing, name: withdraw}
    on: {quoted: {goto: route, save_as: quote}}
  route:
    choice:
      - when: {path: $.quote.express, equals: true}
        goto: express
      - when: {path: $.quote.country, in: [NL, BE]}
        goto: express
    default: standard
  express:
    command: {service: delivery, name: express}
    on: {sent: done}
  standard:
    command: {service: delivery, name: standard}
    on: {sent: done}
  done: {final: succeeded}
"""


def start(definition: MachineDefinition, data: dict[str, Any]) -> Decision:
    decision = decide(definition, None, StartSaga("s1", definition.machine, data), NOW)
    assert decision.disposition is Disposition.APPLIED, decision.reason
    return decision


def failed_in_choice(saga: Saga) -> str:
    assert saga.status is SagaStatus.FAILED
    assert saga.state == "route"
    assert saga.finished_at == NOW
    assert saga.pending == []
    assert saga.flagged is not None
    events = [entry.event for entry in saga.history]
    assert events[-2:] == ["condition_failed", "finished"]
    return saga.flagged


def test_a_string_amount_fails_the_saga_instead_of_skipping_the_compliance_check() -> None:
    decision = start(machine(COMPLIANCE), {"amount": "9000"})

    assert decision.commands == []  # neither the check nor the approval
    flag = failed_in_choice(decision.saga)
    assert flag == (
        "choice state 'route', choice[0]: $.amount gt 5000 compares a number with a string: "
        "the saga holds '9000'"
    )
    assert "approve" not in decision.saga.visits
    assert decision.saga.history[-2].detail == (
        "choice[0]: $.amount gt 5000 compares a number with a string: the saga holds '9000'"
    )


@pytest.mark.parametrize(
    ("amount", "kind", "excerpt"),
    [
        (True, "a boolean", "bool True"),
        ([9000], "a list", "list [9000]"),
        ({"value": 9000}, "an object", "dict {'value': 9000}"),
    ],
)
def test_other_kinds_fail_too(amount: object, kind: str, excerpt: str) -> None:
    decision = start(machine(COMPLIANCE), {"amount": amount})

    assert decision.commands == []
    flag = failed_in_choice(decision.saga)
    assert f"$.amount gt 5000 compares a number with {kind}: the saga holds {excerpt}" in flag


@pytest.mark.parametrize(
    ("data", "step"),
    [
        ({"amount": 9000}, "compliance_check"),
        ({"amount": 5000.5}, "compliance_check"),
        ({"amount": 100}, "approve"),
        ({"amount": None}, "approve"),  # no amount is no match, as it always was
        ({}, "approve"),
    ],
)
def test_numbers_and_missing_amounts_choose_as_before(data: dict[str, Any], step: str) -> None:
    decision = start(machine(COMPLIANCE), data)

    assert decision.saga.status is SagaStatus.RUNNING
    assert [command.step for command in decision.commands] == [step]
    assert decision.saga.flagged is None


@pytest.mark.parametrize(
    ("quote", "flag"),
    [
        (
            {"express": 1},
            (
                "choice state 'route', choice[0]: $.quote.express equals true compares a "
                "boolean with a number: the saga holds int 1"
            ),
        ),
        (
            {"express": False, "country": 31},
            (
                "choice state 'route', choice[1]: $.quote.country in ['NL', 'BE'] compares a "
                "string with a number: the saga holds int 31"
            ),
        ),
    ],
)
def test_a_mismatch_after_a_done_step_fails_for_an_operator(
    quote: dict[str, Any], flag: str
) -> None:
    definition = machine(AFTER_A_STEP)
    saga = start(definition, {}).saga
    reply = StepReply("quote", 1, 1, "quoted", quote)

    decision = decide(definition, saga, reply, NOW)

    assert decision.disposition is Disposition.APPLIED
    assert decision.commands == []  # no delivery, and no compensation chosen for the operator
    assert failed_in_choice(decision.saga) == flag
    assert [step.step for step in decision.saga.completed] == ["quote"]


def test_a_matching_rule_before_the_mismatch_still_wins() -> None:
    definition = machine(AFTER_A_STEP)
    saga = start(definition, {}).saga
    reply = StepReply("quote", 1, 1, "quoted", {"express": True, "country": 31})

    decision = decide(definition, saga, reply, NOW)

    assert decision.saga.status is SagaStatus.RUNNING
    assert [command.step for command in decision.commands] == ["express"]
