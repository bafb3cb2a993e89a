"""What the flow monitor draws, from sagas that `decide()` moved: a saga's path on its
diagram, the machine's dead-letter queues, and latency percentiles as `sagawire stats` gives
them."""

from __future__ import annotations

import dataclasses

import pytest
from decide_support import (
    ORDER,
    applied,
    at,
    machine,
    operator,
    order_at_ship,
    reply,
    start,
)

from orchestrator.adapters.mongo import latency_ms
from orchestrator.core.diagram import dot
from orchestrator.core.messages import TimerFired
from orchestrator.core.saga import HistoryEntry
from orchestrator.gateway.views import (
    START_NODE,
    PathEdge,
    machine_dead_letter_queues,
    saga_path,
)


@pytest.fixture
def order():
    return machine(ORDER)


def edges(path) -> list[tuple[str, str, str | None]]:
    return [(e.source, e.target, e.label) for e in path.edges]


def test_a_saga_that_just_started_is_at_its_first_state(order):
    path = saga_path(start(order))
    assert path.visited == ["pay"]
    assert edges(path) == [(START_NODE, "pay", None)]
    assert (path.current, path.complete) == ("pay", True)


def test_the_replies_label_the_transitions_taken(order):
    path = saga_path(order_at_ship(order))
    assert path.visited == ["pay", "reserve", "ship"]
    assert edges(path) == [
        (START_NODE, "pay", None),
        ("pay", "reserve", "payment_executed"),
        ("reserve", "ship", "stock_reserved"),
    ]
    assert path.current == "ship"


def test_a_business_failure_leads_to_compensate_and_the_outcome_ends_the_path(order):
    saga = order_at_ship(order)
    saga = applied(order, saga, reply("ship", "delivery_failed", rejected=True)).saga
    compensating = saga_path(saga)
    assert compensating.visited == ["pay", "reserve", "ship", "compensate"]
    assert edges(compensating)[-1] == ("ship", "compensate", "delivery_failed")
    assert compensating.current == "compensate"
    saga = applied(order, saga, reply("compensate:reserve", "stock_released")).saga
    saga = applied(order, saga, reply("compensate:pay", "payment_refunded")).saga
    assert saga.status.value == "compensated"
    assert saga_path(saga).current is None


def test_a_step_that_timed_out_for_good_is_labelled_timed_out():
    quick = machine(ORDER.replace("timeout: 10s", "timeout: 10s\n    retry: {attempts: 1}", 1))
    saga = applied(quick, start(quick), TimerFired(), at(11)).saga
    assert edges(saga_path(saga))[-1] == ("pay", "compensate", "timed out")


def test_an_operators_abort_takes_no_transition_of_the_machine(order):
    saga = order_at_ship(order)
    aborted = applied(order, saga, operator("abort", compensate=True)).saga
    path = saga_path(aborted)
    assert "compensate" in path.visited
    assert all(edge.target != "compensate" for edge in path.edges)


def test_the_final_state_is_reached_and_nothing_is_current(order):
    saga = applied(order, order_at_ship(order), reply("ship", "shipped")).saga
    path = saga_path(saga)
    assert path.visited[-1] == "shipped"
    assert edges(path)[-1] == ("ship", "shipped", "shipped")
    assert path.current is None


def test_a_dropped_history_keeps_every_visited_state_but_claims_no_start(order):
    saga = order_at_ship(order)
    older = [entry for entry in saga.history if entry.state == "pay"]
    trimmed = saga.model_copy(
        update={
            "history": [entry for entry in saga.history if entry not in older],
            "history_dropped": len(older),
        }
    )
    path = saga_path(trimmed)
    assert not path.complete
    assert sorted(path.visited) == ["pay", "reserve", "ship"]  # `pay` from its visit count
    assert edges(path) == [("reserve", "ship", "stock_reserved")]


def test_a_transition_taken_twice_is_listed_once(order):
    saga = order_at_ship(order)
    again = dataclasses.replace(saga.history[-1], event="entered", state="ship")
    looped = saga.model_copy(update={"history": [*saga.history, again, again]})
    assert len(saga_path(looped).edges) == len(saga_path(saga).edges)


def test_every_node_of_the_path_is_a_node_of_the_diagram(order):
    saga = applied(order, order_at_ship(order), reply("ship", "delivery_failed")).saga
    drawn = dot(order)
    for node in saga_path(saga).visited:
        assert f"  {node} [" in drawn
    for edge in saga_path(saga).edges:
        assert f"  {edge.source} -> {edge.target}" in drawn


def test_unknown_history_events_are_passed_over(order):
    saga = start(order)
    noise = HistoryEntry(at=saga.created_at, event="something_new", state="elsewhere")
    assert saga_path(saga.model_copy(update={"history": [*saga.history, noise]})).visited == ["pay"]


def test_path_edges_compare_by_value():
    assert PathEdge("a", "b", "x") == PathEdge("a", "b", "x")
    assert PathEdge("a", "b", "x") != PathEdge("a", "b", None)


def test_a_machines_dead_letter_queues_are_its_services_commands_and_replies():
    assert machine_dead_letter_queues(["stock", "payment", "stock"]) == [
        "sagawire.payment.commands.dlq",
        "sagawire.payment.replies.dlq",
        "sagawire.stock.commands.dlq",
        "sagawire.stock.replies.dlq",
    ]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ([], {"p50": None, "p95": None, "p99": None}),
        ([0.0104], {"p50": 10.4, "p95": 10.4, "p99": 10.4}),
        (
            [n / 1000 for n in range(1, 101)],
            {"p50": 50.0, "p95": 95.0, "p99": 99.0},
        ),
    ],
)
def test_latencies_in_milliseconds_to_a_tenth(seconds, expected):
    assert latency_ms(seconds) == expected
