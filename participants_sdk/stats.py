"""What a participant counts, by command: plain counters, read when metrics are scraped.

    participant.stats.handled["execute_payment"]      # handler runs of that command

Counting costs a dict increment on a command's path, and nothing else: exporting is left to
whoever reads them, `participants_sdk.prometheus` for Prometheus (the `metrics` extra). A count's
command is a registered handler's: a command the participant has no handler for is counted as
`UNKNOWN`, so no name taken from a message ever becomes a key.
"""

from __future__ import annotations

import bisect
import collections
from typing import Final

DURATION_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds in seconds: fine below 100 ms, where a step and a handler usually take."""

UNKNOWN: Final = "unknown"
"""The key of counts whose command has no registered handler."""


class Histogram:
    """Cumulative-bucket histogram in Prometheus' shape, cheap to observe."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        """Observations per bucket, not cumulative; the last one is `+Inf`."""
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations up to it), as the Prometheus text format writes them."""
        running, out = 0, []
        for bound, n in zip([*map(str, self.bounds), "+Inf"], list(self.counts), strict=True):
            running += n
            out.append((bound, running))
        return out


class ParticipantStats:
    """One participant's counts, each keyed by command name."""

    __slots__ = (
        "dead_lettered",
        "duplicates",
        "handled",
        "handler_seconds",
        "rejected",
        "requeued",
        "retried",
        "service",
    )

    def __init__(self, service: str) -> None:
        self.service = service
        self.handled: collections.Counter[str] = collections.Counter()
        """Handler runs, whatever their end: a reply, a `Reject`, an exception."""
        self.rejected: collections.Counter[str] = collections.Counter()
        """Handler runs that ended in a `Reject`: a business failure replied."""
        self.retried: collections.Counter[str] = collections.Counter()
        """Commands sent back through the retry queue: `RetryLater`, or a handler that raised."""
        self.dead_lettered: collections.Counter[str] = collections.Counter()
        """Commands dead-lettered: unreadable, no handler, invalid, or failing past the retries."""
        self.duplicates: collections.Counter[str] = collections.Counter()
        """Commands answered from the dedupe store without running the handler."""
        self.requeued: collections.Counter[str] = collections.Counter()
        """Commands given back to their queue because the broker did not confirm the reply."""
        self.handler_seconds: collections.defaultdict[str, Histogram] = collections.defaultdict(
            Histogram
        )
        """How long each handler run took, until its reply or exception."""
