"""Prometheus metrics, read from the runtime's counters at scrape time: nothing on the hot path.

Labels take their values from the machine definitions only (`runtime.stats` keys its counts so),
which bounds every metric's series by the machines loaded. `metrics_registry()` also registers
prometheus-client's process, platform and garbage-collector collectors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Final, TypeVar

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from orchestrator.runtime.stats import Histogram, RuntimeStats
from orchestrator.runtime.system import ActorSystem

Key = TypeVar("Key", bound=tuple[str, ...])
"""The label values of one series, in the order of the metric's labels."""

_TOTALS: Final = (
    (
        "conflicts",
        "sagawire_version_conflicts",
        "Saves that lost to another writer and were redone.",
    ),
    (
        "deadlines_moved",
        "sagawire_deadlines_moved",
        "Sagas saved again because a command's confirm came late: its timeout counts from it.",
    ),
    (
        "passivated",
        "sagawire_passivations",
        "Idle saga actors dropped from memory; the saga is loaded again when next needed.",
    ),
    (
        "backpressure_waits",
        "sagawire_backpressure_waits",
        (
            "Deliveries that waited for an actor slot because every live actor was busy "
            "(max_live_actors): the consumers are held back meanwhile."
        ),
    ),
    (
        "timer_fires",
        "sagawire_timer_fires",
        "Sagas woken for a due deadline, by this process's timers or by the sweeper.",
    ),
    (
        "sweep_wakeups",
        "sagawire_sweep_wakeups",
        (
            "Due sagas the sweeper found in the store with no timer in this process "
            "(after a restart, or sagas another replica last touched)."
        ),
    ),
    (
        "recovered_outboxes",
        "sagawire_recovered_outboxes",
        "Sagas whose outbox a crash left unconfirmed, published again at start.",
    ),
    (
        "transient_failures",
        "sagawire_transient_failures",
        "Tries of a message that failed on the store or broker and were made again after a pause.",
    ),
)
"""(`RuntimeStats` attribute, metric name, help) of the counters without labels."""

_STORE_COUNTERS: Final = (
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

_BROKER_COUNTERS: Final = (
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

_SERVER_CHANGES: Final = ("lost", "back", "pool_cleared", "pool_ready")
"""The MongoDB server's changes of state the store's driver reports (`mongo.events`)."""


class RuntimeCollector(Collector):
    def __init__(self, system: ActorSystem) -> None:
        self._system = system

    def collect(self) -> Iterator[Metric]:
        system, stats = self._system, self._system.stats
        yield from _sagas(stats)
        yield _labelled(
            "sagawire_messages",
            "Messages processed, by what became of them.",
            ("disposition",),
            {(disposition,): n for disposition, n in stats.decisions.items()},
        )
        yield _labelled(
            "sagawire_dead_lettered",
            "Messages dead-lettered by the orchestrator, by kind and by the service whose reply "
            "queue they came from (empty for control requests).",
            ("kind", "service"),
            stats.dead_lettered,
        )
        yield _labelled(
            "sagawire_requeued",
            "Deliveries given back to their queue: the store or broker kept failing (failing), "
            "or the runtime was stopping (stopping).",
            ("reason",),
            {("failing",): stats.requeued, ("stopping",): stats.requeued_stopping},
        )
        for attribute, name, documentation in _TOTALS:
            yield CounterMetricFamily(name, documentation, value=getattr(stats, attribute))
        yield GaugeMetricFamily(
            "sagawire_live_actors", "Saga actors in memory.", value=system.live_actors
        )
        yield GaugeMetricFamily(
            "sagawire_timers_armed",
            "Sagas with a deadline this process holds an in-memory timer for.",
            value=len(system.timers),
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
        yield from _counters(system.store, _STORE_COUNTERS)
        yield from _server_changes(system.store)
        yield from _counters(system.broker, _BROKER_COUNTERS)


def _sagas(stats: RuntimeStats) -> Iterator[Metric]:
    """Sagas and their steps, by machine (and step, or service)."""
    yield _labelled(
        "sagawire_sagas_finished",
        "Sagas that reached an outcome, by machine.",
        ("machine", "outcome"),
        stats.finished,
    )
    yield _labelled(
        "sagawire_commands_published",
        "Commands confirmed by the broker, by machine and the service they were sent to.",
        ("machine", "service"),
        stats.commands_published,
    )
    yield _labelled(
        "sagawire_step_timeouts",
        "Step attempts whose reply did not come before the deadline, by machine and step.",
        ("machine", "step"),
        stats.step_timeouts,
    )
    yield _labelled(
        "sagawire_step_retries",
        "Step commands sent again as a new attempt (after a timeout, a rejected compensation, "
        "or an operator's retry), by machine and step.",
        ("machine", "step"),
        stats.step_retries,
    )
    yield _histograms(
        "sagawire_step_latency_seconds",
        "From sending a step's command to applying its reply, by machine and step "
        "(a compensation's step is compensate:<step>).",
        ("machine", "step"),
        stats.step_latency,
    )
    yield _histograms(
        "sagawire_saga_duration_seconds",
        "From a saga's start to its outcome, for the sagas this process finished, by machine.",
        ("machine",),
        {(machine,): histogram for machine, histogram in stats.saga_duration.items()},
    )


def _labelled(
    name: str,
    documentation: str,
    labels: Sequence[str],
    counts: Mapping[Key, int],
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, n in sorted(counts.items()):
        family.add_metric(key, n)
    return family


def _histograms(
    name: str,
    documentation: str,
    labels: Sequence[str],
    histograms: Mapping[Key, Histogram],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for key, histogram in sorted(histograms.items()):
        family.add_metric(key, histogram.cumulative(), histogram.total)
    return family


def _counters(source: object, counters: tuple[tuple[str, str, str], ...]) -> Iterator[Metric]:
    """The counters `source` keeps, as attributes named in `counters`; none it lacks."""
    for attribute, name, documentation in counters:
        value = getattr(source, attribute, None)
        if isinstance(value, int):
            yield CounterMetricFamily(name, documentation, value=value)


def _server_changes(store: object) -> Iterator[Metric]:
    """The MongoDB store's server changes (`MongoSagaStore.server_state`), when it has them."""
    changes = getattr(getattr(store, "server_state", None), "changes", None)
    if isinstance(changes, Mapping):
        yield _labelled(
            "sagawire_store_server_changes",
            "Changes of the MongoDB server's state as the driver saw them: lost, back, "
            "pool_cleared (the connection pool paused), pool_ready.",
            ("change",),
            {(change,): changes.get(change, 0) for change in _SERVER_CHANGES},
        )


def metrics_registry(system: ActorSystem) -> CollectorRegistry:
    """The daemon's registry: the runtime's metrics, and the process's and Python's."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RuntimeCollector(system))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
