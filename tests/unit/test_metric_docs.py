"""The metrics' documents agree with what Sagawire exports.

docs/grafana/sagawire.json: every metric its PromQL names must be a sample the daemon's registry
(`daemon.metrics`) or a participant's collector (`participants_sdk.prometheus`) can produce, so a
renamed metric fails here, not on a dashboard that silently shows nothing. docs/metrics.md: every
metric of Sagawire's own is listed.
"""

from __future__ import annotations

import collections
import json
import re
import types
from pathlib import Path

import pytest
from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel

from orchestrator.adapters.memory import MemorySagaStore
from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.core.machines import load_machines
from orchestrator.daemon import metrics
from orchestrator.runtime.system import ActorSystem
from participants_sdk import CommandContext, MemoryBroker, Participant
from participants_sdk.prometheus import ParticipantCollector

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "sagawire.json"
METRICS_PAGE = ROOT / "docs" / "metrics.md"

NOT_METRICS = frozenset(
    {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
)
"""PromQL words that are neither functions (followed by a parenthesis) nor metric names."""


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for found in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        is_function = expr[found.end() :].lstrip().startswith("(")
        if not is_function and found[0].lower() not in NOT_METRICS:
            names.add(found[0])
    return names


def test_the_name_finder_sees_metrics_and_nothing_else():
    expr = (
        'histogram_quantile(0.95, sum by (machine, le) (rate(a_bucket{machine=~"$m"}'
        "[$__rate_interval]))) / ignoring(outcome) group_left sum without (x) (b_total offset 5m)"
        " > bool 0 and on (y) c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(METRIC, LABEL) is Grafana's, not PromQL
            found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert found, variable["definition"]
            queries.append(found[1])
    return queries


def sample_names(family: Metric) -> set[str]:
    """The names of the samples a metric family is written as."""
    if family.type == "counter":
        return {f"{family.name}_total"}
    if family.type == "histogram":
        return {f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
    return {family.name}


class _Shipment(BaseModel):
    order_id: str


def exported() -> set[str]:
    """Every sample name of the daemon's registry and of a participant's collector."""
    return {name for family in families() for name in sample_names(family)}


def families() -> list[Metric]:
    """The metric families of the daemon's registry and of a participant's collector."""
    store = MemorySagaStore()
    # The counters the MongoDB store keeps (checked below) and the RabbitMQ broker's.
    for attribute, _, _ in metrics._STORE_COUNTERS:
        setattr(store, attribute, 0)
    store.server_state = types.SimpleNamespace(changes=collections.Counter())
    broker = MemoryBroker().connect()
    for attribute, _, _ in metrics._BROKER_COUNTERS:
        setattr(broker, attribute, 0)
    system = ActorSystem(load_machines(ROOT / "machines"), store, broker)
    daemon = metrics.metrics_registry(system)

    participant = Participant("delivery")

    @participant.command_handler("deliver_order")
    async def deliver(cmd: _Shipment, ctx: CommandContext) -> _Shipment:
        return cmd

    sdk = CollectorRegistry()
    sdk.register(ParticipantCollector(participant))
    return [*daemon.collect(), *sdk.collect()]


def test_the_store_stand_in_counts_what_the_mongodb_store_counts():
    for attribute, _, _ in metrics._STORE_COUNTERS:
        assert isinstance(getattr(MongoSagaStore, attribute), property), attribute


def test_every_metric_the_dashboard_uses_is_exported():
    names = exported()
    assert {"sagawire_step_latency_seconds_bucket", "process_cpu_seconds_total"} <= names
    used = {name for query in dashboard_queries() for name in metric_names(query)}
    assert used, "the dashboard names no metric"
    assert sorted(used - names) == []


@pytest.mark.parametrize(
    "metric",
    [
        "sagawire_sagas_finished_total",
        "sagawire_step_latency_seconds_bucket",
        "sagawire_dead_lettered_total",
        "sagawire_live_actors",
        "sagawire_outbox_backlog",
        "sagawire_broker_reconnects_total",
        "sagawire_store_writes_total",
        "sagawire_participant_handled_total",
        "sagawire_participant_rejected_total",
        "sagawire_participant_handler_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ],
)
def test_the_dashboard_shows(metric: str):
    assert any(metric in metric_names(query) for query in dashboard_queries())


def test_the_metrics_page_lists_every_metric_of_sagawire():
    page = METRICS_PAGE.read_text(encoding="utf-8")
    listed = set(re.findall(r"`(sagawire_\w+)`", page))
    # As the page writes them: a counter with its `_total`, a histogram by its family name.
    ours = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in families()
        if family.name.startswith("sagawire_")
    }
    assert len(ours) > 30
    assert sorted(ours - listed) == []
    assert sorted(listed - ours) == []
