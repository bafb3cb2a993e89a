"""What operators ask of the `sagas` collection (`store.queries`): listings, counts, latencies.

Read-only and plain MongoDB (`$and`, `$or`, `$in`, ranges, sort, skip, limit), so it runs on
FerretDB too. On MongoDB every filter field has an index (`documents.SAGA_INDEXES`); FerretDB v1
reads the whole collection for them and gets none. There the saga documents can also trail a save
by a few seconds (`ferretdb`); `sagas show` reads through the store, which is exact.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any, Final

from pymongo.asynchronous.collection import AsyncCollection

from orchestrator.adapters.mongo.documents import UNFINISHED, Document, history_of, store_errors
from orchestrator.core.saga import SagaStatus

_SUMMARY = {
    "machine": 1,
    "machine_version": 1,
    "status": 1,
    "state": 1,
    "label": 1,
    "deadline": 1,
    "flagged": 1,
    "created_at": 1,
    "updated_at": 1,
    "finished_at": 1,
    "pending.state": 1,
}


@dataclasses.dataclass(frozen=True)
class SagaFilter:
    machine: str | None = None
    statuses: tuple[SagaStatus, ...] = ()
    state: str | None = None
    """A current state: the saga's state, or the state of one of its pending steps."""
    label: str | None = None
    """The business state (`label` in the machine), e.g. PAID."""
    since: dt.datetime | None = None
    """Updated at or after."""
    until: dt.datetime | None = None
    """Updated before."""
    stuck_before: dt.datetime | None = None
    """Only stuck sagas: unfinished with a deadline before this time, or flagged for an operator."""

    def query(self) -> Document:
        clauses: list[Document] = []
        if self.machine is not None:
            clauses.append({"machine": self.machine})
        if self.statuses:
            clauses.append({"status": {"$in": [status.value for status in self.statuses]}})
        if self.state is not None:
            clauses.append({"$or": [{"state": self.state}, {"pending.state": self.state}]})
        if self.label is not None:
            clauses.append({"label": self.label})
        if self.since is not None:
            clauses.append({"updated_at": {"$gte": self.since}})
        if self.until is not None:
            clauses.append({"updated_at": {"$lt": self.until}})
        if self.stuck_before is not None:
            clauses.append(
                {
                    "$or": [
                        {"status": {"$in": UNFINISHED}, "deadline": {"$lt": self.stuck_before}},
                        {"flagged": {"$type": "string"}},
                    ]
                }
            )
        if not clauses:
            return {}
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


@dataclasses.dataclass(frozen=True)
class SagaSummary:
    saga_id: str
    machine: str
    machine_version: int
    status: str
    states: list[str]
    """The saga's state, then the states of its pending steps (a parallel state has several)."""
    label: str | None
    deadline: dt.datetime | None
    flagged: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def from_document(cls, document: Document) -> SagaSummary:
        states = [str(document["state"])]
        for pending in document.get("pending") or []:
            if pending.get("state") not in states:
                states.append(str(pending["state"]))
        return cls(
            saga_id=str(document["_id"]),
            machine=str(document["machine"]),
            machine_version=int(document["machine_version"]),
            status=str(document["status"]),
            states=states,
            label=document.get("label"),
            deadline=document.get("deadline"),
            flagged=document.get("flagged"),
            created_at=document["created_at"],
            updated_at=document["updated_at"],
            finished_at=document.get("finished_at"),
        )

    def to_json(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        for name, value in fields.items():
            if isinstance(value, dt.datetime):
                fields[name] = value.isoformat()
        return fields


@dataclasses.dataclass(frozen=True)
class SagaPage:
    total: int
    """Sagas matching the filter, all pages together."""
    sagas: list[SagaSummary]
    """This page: most recently updated first."""


class SagaQueries:
    """The reads of `sagas` that operators make, by name."""

    def __init__(self, sagas: AsyncCollection[Document]) -> None:
        self._sagas = sagas

    async def find_sagas(self, where: SagaFilter, *, limit: int, skip: int = 0) -> SagaPage:
        """One page of the sagas matching `where`, newest update first, and how many match."""
        if limit < 1 or skip < 0:
            raise ValueError(f"limit must be >= 1 and skip >= 0, got limit={limit} skip={skip}")
        query = where.query()
        with store_errors("list sagas"):
            total = await self._sagas.count_documents(query)
            cursor = self._sagas.find(query, _SUMMARY).sort([("updated_at", -1), ("_id", 1)])
            documents = [document async for document in cursor.skip(skip).limit(limit)]
        return SagaPage(total=total, sagas=[SagaSummary.from_document(d) for d in documents])

    async def saga_ids(self) -> list[str]:
        """The id of every saga, sorted."""
        with store_errors("list sagas"):
            ids = [str(d["_id"]) async for d in self._sagas.find({}, {"_id": 1})]
        return sorted(ids)

    async def counts_by_machine(self) -> dict[str, dict[str, int]]:
        """Machine -> status -> sagas, with every status present (0 when none)."""
        return await counts_by_machine(self._sagas)

    async def counts_by_state(self, machine: str) -> dict[str, dict[str, int]]:
        """State -> status -> sagas of `machine` in that state now (a finished saga: the state
        it ended in, or was compensated from); only the pairs found."""
        pipeline: list[Document] = [
            {"$match": {"machine": machine}},
            {"$group": {"_id": {"state": "$state", "status": "$status"}, "count": {"$sum": 1}}},
        ]
        counts: dict[str, dict[str, int]] = {}
        with store_errors("count sagas by state"):
            async for row in await self._sagas.aggregate(pipeline):
                state, status = str(row["_id"]["state"]), str(row["_id"]["status"])
                counts.setdefault(state, {})[status] = int(row["count"])
        return counts

    async def count(self, where: SagaFilter) -> int:
        """How many sagas match `where`."""
        with store_errors("count sagas"):
            return await self._sagas.count_documents(where.query())

    async def step_latencies(
        self, *, sample: int, machine: str | None = None
    ) -> dict[str, list[float]]:
        """Machine -> seconds from each command sent to its reply, over the `sample` sagas
        updated last (their whole histories: the newest steps of busy machines)."""
        query: Document = {} if machine is None else {"machine": machine}
        latencies: dict[str, list[float]] = {}
        with store_errors("read saga histories"):
            cursor = self._sagas.find(query, {"machine": 1, "history": 1}).sort("updated_at", -1)
            async for document in cursor.limit(sample):
                found = latencies.setdefault(str(document["machine"]), [])
                found.extend(history_latencies(history_of(document.get("history"))))
        return latencies


async def counts_by_machine(sagas: AsyncCollection[Document]) -> dict[str, dict[str, int]]:
    """Machine -> status -> sagas in the collection `sagas`, with every status present."""
    pipeline: list[Document] = [
        {"$group": {"_id": {"machine": "$machine", "status": "$status"}, "count": {"$sum": 1}}}
    ]
    counts: dict[str, dict[str, int]] = {}
    with store_errors("count sagas"):
        async for row in await sagas.aggregate(pipeline):
            machine, status = str(row["_id"]["machine"]), str(row["_id"]["status"])
            per = counts.setdefault(machine, {s.value: 0 for s in SagaStatus})
            per[status] = int(row["count"])
    return counts


def history_latencies(history: list[Document]) -> list[float]:
    """Seconds between each `command_sent` and the `replied` of the same step and attempt."""
    sent: dict[tuple[object, object], dt.datetime] = {}
    found = []
    for entry in history:
        key = (entry.get("step"), entry.get("attempt"))
        if entry.get("event") == "command_sent":
            sent[key] = entry["at"]
        elif entry.get("event") == "replied" and key in sent:
            found.append((entry["at"] - sent.pop(key)).total_seconds())
    return found


LATENCY_PERCENTILES: Final = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def latency_ms(values: list[float]) -> dict[str, float | None]:
    """p50, p95 and p99 of latencies in seconds, in milliseconds to 0.1; None without values."""
    found: dict[str, float | None] = {}
    for label, fraction in LATENCY_PERCENTILES.items():
        value = percentile(values, fraction)
        found[label] = None if value is None else round(value * 1000, 1)
    return found


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (`fraction` 0.5 for p50); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
