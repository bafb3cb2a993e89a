"""The MongoDB adapter: the saga store, machine snapshots, pauses and operators' queries.

    store = await MongoSagaStore.connect("mongodb://localhost:27017/sagawire")
    await store.ensure_indexes()
    await store.register_definitions(registry)

One concept a module: `store` (the `SagaStore` port), `marks` (outbox marks, batched),
`connection` (client options, first connect, server detection), `events` (the log of the server
going away and coming back), `documents` (layout, indexes, driver errors), `queries` (listings
and counts for the CLI), `definitions` (snapshots), `pauses`, and `ferretdb` (every workaround
for what FerretDB v1 lacks, and why).
"""

from __future__ import annotations

from orchestrator.adapters.mongo.queries import (
    SagaFilter,
    SagaPage,
    SagaSummary,
    counts_by_machine,
    latency_ms,
    percentile,
)
from orchestrator.adapters.mongo.store import MongoSagaStore

__all__ = [
    "MongoSagaStore",
    "SagaFilter",
    "SagaPage",
    "SagaSummary",
    "counts_by_machine",
    "latency_ms",
    "percentile",
]
