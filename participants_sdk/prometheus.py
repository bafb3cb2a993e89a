"""Prometheus metrics of participants: the `metrics` extra (`pip install 'sagawire-sdk[metrics]'`).

    from prometheus_client import REGISTRY, start_http_server
    from participants_sdk.prometheus import ParticipantCollector

    REGISTRY.register(ParticipantCollector(payments, refunds))
    start_http_server(9100)

The collector reads each participant's `stats` when scraped; nothing is added to a command's
path. Every metric is labelled `service` and `command`, and the commands are the registered
handlers' (each shown from the start, at 0), plus `unknown` once a command without a handler
was dead-lettered. This is the only SDK module that imports prometheus-client.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from participants_sdk.participant import Participant
from participants_sdk.stats import Histogram

__all__ = ["COUNTERS", "HANDLER_SECONDS", "ParticipantCollector"]

LABELS: Final = ("service", "command")

COUNTERS: Final = (
    (
        "handled",
        "sagawire_participant_handled",
        "Command handler runs, whatever their end: a reply, a Reject or an exception.",
    ),
    (
        "rejected",
        "sagawire_participant_rejected",
        "Command handler runs that ended in a Reject: a business failure, replied.",
    ),
    (
        "retried",
        "sagawire_participant_retried",
        "Commands sent back through the retry queue: RetryLater, or a handler that raised.",
    ),
    (
        "dead_lettered",
        "sagawire_participant_dead_lettered",
        (
            "Commands dead-lettered: unreadable, with no handler (as command unknown), invalid, "
            "or failing past the retries."
        ),
    ),
    (
        "duplicates",
        "sagawire_participant_duplicates",
        "Commands answered from the dedupe store without running the handler.",
    ),
    (
        "requeued",
        "sagawire_participant_requeued",
        "Commands given back to their queue because the broker did not confirm the reply.",
    ),
)
"""(`ParticipantStats` attribute, metric name, help) of each counter; Prometheus adds `_total`."""

HANDLER_SECONDS: Final = "sagawire_participant_handler_seconds"


class ParticipantCollector(Collector):
    """The metrics of one or more participants, of distinct services, for one registry."""

    def __init__(self, *participants: Participant) -> None:
        services = [participant.service for participant in participants]
        if len(set(services)) < len(services):
            raise ValueError(f"participants of one service would share their series: {services}")
        self._participants = participants

    def collect(self) -> Iterator[Metric]:
        read = [_Reading.of(participant) for participant in self._participants]
        for attribute, name, documentation in COUNTERS:
            family = CounterMetricFamily(name, documentation, labels=LABELS)
            for reading in read:
                counts = reading.counts[attribute]
                for command in reading.keys(counts):
                    family.add_metric([reading.service, command], counts.get(command, 0))
            yield family
        durations = HistogramMetricFamily(
            HANDLER_SECONDS,
            "How long command handlers took, from the call to the reply or exception.",
            labels=LABELS,
        )
        for reading in read:
            for command in reading.keys(reading.durations):
                histogram = reading.durations.get(command) or Histogram()
                durations.add_metric(
                    [reading.service, command], histogram.cumulative(), histogram.total
                )
        yield durations


@dataclasses.dataclass(frozen=True, slots=True)
class _Reading:
    """One participant's counts, copied: a scrape may run in another thread (prometheus-client's
    HTTP server) while the event loop counts, and copying a dict holds the GIL where iterating
    one does not."""

    service: str
    commands: list[str]
    counts: dict[str, dict[str, int]]
    durations: dict[str, Histogram]

    @classmethod
    def of(cls, participant: Participant) -> _Reading:
        stats = participant.stats
        return cls(
            service=participant.service,
            commands=participant.commands,
            counts={attribute: dict(getattr(stats, attribute)) for attribute, _, _ in COUNTERS},
            durations=dict(stats.handler_seconds),
        )

    def keys(self, counted: Mapping[str, object]) -> list[str]:
        """The registered commands, then anything else counted (only `unknown` can be)."""
        return [*self.commands, *sorted(set(counted) - set(self.commands))]
