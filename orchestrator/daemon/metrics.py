"""Prometheus metrics, read from the runtime's counters at scrape time: nothing on the hot path."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from orchestrator.runtime.stats import Histogram
from orchestrator.runtime.system import ActorSystem


class RuntimeCollector(Collector):
    def __init__(self, system: ActorSystem) -> None:
        self._system = system

    def collect(self) -> Iterator[Metric]:
        stats = self._system.stats
        finished = CounterMetricFamily(
            "sagawire_sagas_finished", "Sagas that reached an outcome.", labels=["outcome"]
        )
        for outcome, n in sorted(stats.finished.items()):
            finished.add_metric([outcome], n)
        yield finished
        decisions = CounterMetricFamily(
            "sagawire_messages",
            "Messages processed, by what became of them.",
            labels=["disposition"],
        )
        for disposition, n in sorted(stats.decisions.items()):
            decisions.add_metric([disposition], n)
        yield decisions
        dead = CounterMetricFamily(
            "sagawire_dead_lettered", "Messages dead-lettered by the orchestrator.", labels=["kind"]
        )
        for kind, n in sorted(stats.dead_lettered.items()):
            dead.add_metric([kind], n)
        yield dead
        yield CounterMetricFamily(
            "sagawire_commands_published",
            "Commands confirmed by the broker.",
            value=stats.commands_published,
        )
        yield CounterMetricFamily(
            "sagawire_version_conflicts",
            "Saves that lost to another writer and were redone.",
            value=stats.conflicts,
        )
        yield CounterMetricFamily(
            "sagawire_deadlines_moved",
            "Sagas saved again because a command's confirm came late: its timeout counts from it.",
            value=stats.deadlines_moved,
        )
        yield GaugeMetricFamily(
            "sagawire_live_actors", "Saga actors in memory.", value=self._system.live_actors
        )
        yield GaugeMetricFamily(
            "sagawire_outbox_backlog",
            "Commands stored and not yet confirmed by the broker.",
            value=stats.publishing,
        )
        yield GaugeMetricFamily(
            "sagawire_sweep_seconds",
            "How long the last look for due sagas in the store took.",
            value=stats.sweep_seconds,
        )
        yield from _counters(self._system.store, _STORE_COUNTERS)
        yield from _counters(self._system.broker, _BROKER_COUNTERS)
        yield _histogram(
            "sagawire_step_latency_seconds",
            "From sending a step's command to applying its reply.",
            stats.step_latency,
        )
        yield _histogram(
            "sagawire_saga_duration_seconds",
            "From a saga's start to its outcome, for the sagas this process finished.",
            stats.saga_duration,
        )


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=histogram.cumulative(), sum_value=histogram.total
    )


_STORE_COUNTERS = (
    ("writes", "sagawire_store_writes", "Saga and version-claim documents written."),
    ("round_trips", "sagawire_store_round_trips", "Database calls that write sagas."),
    (
        "marks_dropped",
        "sagawire_store_marks_dropped",
        "Outbox marks never written: a newer save of the saga came first.",
    ),
    (
        "projection_repairs",
        "sagawire_store_documents_repaired",
        "Saga documents found behind their newest version claim and rewritten (FerretDB).",
    ),
)
"""What the MongoDB store counts (the memory store counts nothing)."""
_BROKER_COUNTERS = (
    (
        "reconnects",
        "sagawire_broker_reconnects",
        "Connections to RabbitMQ opened again after one was lost.",
    ),
    (
        "consumers_lost",
        "sagawire_broker_channels_lost",
        "Consumer channels closed (or consumers cancelled by the broker) while consuming.",
    ),
)
"""What the RabbitMQ broker counts (the memory broker has no connection to lose): both stay at 0
while every delivery is settled without the broker closing a connection or channel."""


def _counters(source: object, counters: tuple[tuple[str, str, str], ...]) -> Iterator[Metric]:
    """The counters `source` keeps, as attributes named in `counters`; none it lacks."""
    for attribute, name, documentation in counters:
        value = getattr(source, attribute, None)
        if isinstance(value, int):
            yield CounterMetricFamily(name, documentation, value=value)


def metrics_registry(system: ActorSystem) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RuntimeCollector(system))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
