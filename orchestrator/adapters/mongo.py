"""The MongoDB adapter: the saga store and the machine definition snapshots.

    store = await MongoSagaStore.connect("mongodb://localhost:27017/sagawire")
    await store.ensure_indexes()
    await store.register_definitions(registry)

`mongo_store` holds the store (indexes, batched marks, and the version claims that stand in for
atomic conditional writes on FerretDB v1, with `projection_checks`); `mongo_documents` the
document layout and driver errors; `mongo_definitions` the immutable snapshots of machine
definitions; `mongo_events` the log of the server going away and coming back.
"""

from __future__ import annotations

from orchestrator.adapters.mongo_store import MongoSagaStore

__all__ = ["MongoSagaStore"]
