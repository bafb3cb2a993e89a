"""Example-based tests of `decide()`: starting a saga, and which machine version it runs.

See decide_support.py for the machines and for `run()`, which checks every call.
"""

from __future__ import annotations

import pytest
from decide_support import (
    NOW,
    ORDER,
    ORDER_DATA,
    ORDER_V2,
    applied,
    at,
    machine,
    reply,
    run,
    start,
    steps,
    unchanged,
)

from orchestrator.core.decide import decide
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.messages import Disposition, StartSaga
from orchestrator.core.saga import SagaStatus
from orchestrator.core.yaml_source import load_documents

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
