"""`MongoSagaStore`: the saga store (the `SagaStore` port) on MongoDB through PyMongo's async API.

Collection `sagas`, one document per saga (`documents`). A save is one write,
`replace_one({_id, version: loaded}, next version)`: MongoDB applies the filter and the write
atomically, so of two writers from the same version exactly one wins. FerretDB v1 does not; there
the store checks versions with claims instead (`ferretdb`). Outbox marks are written late and in
batches (`marks`).

Times: BSON keeps milliseconds, so a loaded saga's datetimes are the saved ones truncated to the
millisecond, timezone-aware UTC. `insert` and `save` return the saga as given (not truncated); with
a millisecond clock both are the same. Only plain MongoDB is used: no transactions, `$expr` or
partial indexes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any, Self

import structlog
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import CollectionInvalid, DuplicateKeyError

from orchestrator.adapters.mongo import connection, definitions, pauses
from orchestrator.adapters.mongo.batches import Batcher, encode, insert_all
from orchestrator.adapters.mongo.connection import DEFAULT_DATABASE
from orchestrator.adapters.mongo.documents import (
    SAGA_INDEXES,
    UNFINISHED,
    Document,
    WriteCounts,
    from_document,
    mark_update,
    store_errors,
    to_document,
)
from orchestrator.adapters.mongo.events import ServerStateLog
from orchestrator.adapters.mongo.ferretdb import ProjectionChecks, VersionClaims
from orchestrator.adapters.mongo.marks import MarkQueue
from orchestrator.adapters.mongo.queries import SagaQueries
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.machines import MachineRegistry
from orchestrator.core.pauses import MachinePause
from orchestrator.core.saga import Saga
from orchestrator.errors import SagaExists, StoreError, VersionConflict

log = structlog.get_logger("sagawire.store")


class MongoSagaStore:
    """`SagaStore` on MongoDB. `connect()`, `ensure_indexes()` once, `close()` at the end.

    `mark_published` is batched (`MarkQueue`); `flush()` writes the queue now. Operators' reads
    of the sagas are `queries`.
    """

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str = DEFAULT_DATABASE,
        *,
        version_claims: bool = False,
        secondary_indexes: bool = True,
        packed_history: bool = False,
    ) -> None:
        self.client = client
        self.database = client[database]
        self.version_claims = version_claims
        """Check versions with claim inserts (FerretDB v1), not the atomic conditional write."""
        self.secondary_indexes = secondary_indexes
        """Create the query indexes (`SAGA_INDEXES`); off on FerretDB v1, which answers no query
        from them (`ferretdb`) and would only pay for them on every write."""
        self.packed_history = packed_history
        """Write each saga's history as one BSON value (FerretDB v1: `ferretdb`); documents
        are read in either layout."""
        self._sagas: AsyncCollection[Document] = self.database["sagas"]
        self._machines: AsyncCollection[Document] = self.database["machines"]
        self._pauses: AsyncCollection[Document] = self.database["machine_pauses"]
        self.counts = WriteCounts()
        self._claims = VersionClaims(self._sagas, self.database["saga_versions"], self.counts)
        self._marks = MarkQueue(self._write_marks, self._shrink_claims)
        self._inserting = Batcher(self._insert_sagas, name="saga-inserts")
        self.queries = SagaQueries(self._sagas)
        """Listings, counts and latencies for operators."""
        self.server_state: ServerStateLog | None = None
        """Set by `connect()`: the server's losses and returns as the driver saw them."""
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        database: str | None = None,
        *,
        # The driver's own timeout, not asyncio's: its error says why it failed.
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> MongoSagaStore:
        """Connect and ping; `ConfigurationError` at once when the server cannot be reached.

        The database is `database`, else the URL's path, else `sagawire`.
        """
        found = await connection.connect(url, database, timeout=timeout)
        store = cls(
            found.client,
            found.database,
            version_claims=found.ferretdb_v1,
            secondary_indexes=not found.ferretdb_v1,
            packed_history=found.ferretdb_v1,
        )
        store.server_state = found.server_state
        return store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- what the metrics and tests read ------------------------------------------------------

    @property
    def writes(self) -> int:
        """Saga documents written: inserted, replaced, outbox cleared, version claimed."""
        return self.counts.writes

    @property
    def round_trips(self) -> int:
        """Database calls that write sagas or claims, successful or not."""
        return self.counts.round_trips

    @property
    def marks_dropped(self) -> int:
        """Marks made moot by a newer save before they were due, never written."""
        return self._marks.dropped

    @property
    def projection_checks(self) -> tuple[ProjectionChecks, ProjectionChecks]:
        """Claims mode: every save is checked after the first delay, a finished one again."""
        return self._claims.projection_checks

    @property
    def projection_repairs(self) -> int:
        """Claims mode: saga documents found behind their newest claim by a check, and repaired."""
        return self._claims.repairs

    async def ensure_indexes(self) -> None:
        """Create the indexes that are missing; safe to call at every start."""
        with store_errors("create indexes"):
            # One index per call: FerretDB v1 drops the connection when a createIndexes command
            # holding several indexes meets ones that exist already.
            for name, keys, options in SAGA_INDEXES if self.secondary_indexes else []:
                await self._sagas.create_index(keys, name=name, **options)
            if self.version_claims:
                # Created now, not by the first claim: FerretDB v1 deadlocks when it creates a
                # collection while every connection of its pool is busy, as under load.
                with contextlib.suppress(CollectionInvalid):
                    await self.database.create_collection(self._claims.claims.name)

    # -- SagaStore --------------------------------------------------------------------------

    async def load(self, saga_id: str) -> Saga | None:
        with store_errors("load saga", saga_id):
            if self.version_claims:
                document = await self._claims.load(saga_id)
            else:
                document = await self._sagas.find_one({"_id": saga_id})
        if document is None:
            return None
        saga = from_document(document)
        if saga.outbox and self._marks.holds(saga_id, saga.version):
            saga.outbox = []  # published, and the mark is still queued: read our own writes
        return saga

    async def insert(self, saga: Saga) -> Saga:
        """Concurrent inserts share one call (`batches`)."""
        stored = saga.with_version(1)
        with store_errors("insert saga", saga.saga_id):
            try:
                document = to_document(stored, packed_history=self.packed_history)
                await self._inserting.submit(encode(document))
            except DuplicateKeyError:
                raise SagaExists(saga.saga_id) from None
        return stored

    async def _insert_sagas(self, documents: list[RawBSONDocument]) -> list[BaseException | None]:
        self.counts.round_trips += 1
        outcomes = await insert_all(self._sagas, documents)
        self.counts.writes += outcomes.count(None)
        return outcomes

    async def save(self, saga: Saga) -> Saga:
        stored = saga.with_version(saga.version + 1)
        document = to_document(stored, packed_history=self.packed_history)
        with store_errors("save saga", saga.saga_id):
            if self.version_claims:
                superseded = await self._claims.save(saga, document)
                if superseded is not None:
                    self._marks.add_old_claim(superseded)
            else:
                self.counts.round_trips += 1
                result = await self._sagas.replace_one(
                    {"_id": saga.saga_id, "version": saga.version}, document
                )
                if result.matched_count == 0:
                    # Missing, or saved by another: the caller reloads either way, and telling
                    # the two apart would cost a second call.
                    raise VersionConflict(saga.saga_id, saga.version)
                self.counts.writes += 1
        self._marks.drop(saga.saga_id, stored.version)
        return stored

    async def mark_published(self, saga_id: str, version: int) -> None:
        if self._closed:
            raise StoreError("the MongoDB saga store is closed")
        self._marks.add(saga_id, version)

    async def due(self, now: dt.datetime, limit: int) -> list[str]:
        if limit <= 0:
            return []  # a limit of 0 means "no limit" to MongoDB
        query = {"status": {"$in": UNFINISHED}, "deadline": {"$lte": now}}
        with store_errors("find due sagas"):
            cursor = self._sagas.find(query, {"_id": 1}).sort("deadline", 1).limit(limit)
            return [document["_id"] async for document in cursor]

    async def with_outbox(self, limit: int, *, saved_until: dt.datetime | None = None) -> list[str]:
        if limit <= 0:
            return []
        # Recovery asks again until this comes back short: it must not see the outboxes it has
        # just published and marked, so the queued marks are written first.
        await self.flush()
        query: dict[str, Any] = {"outbox_pending": True}
        if saved_until is not None:
            query["updated_at"] = {"$lte": saved_until}
        with store_errors("find pending outboxes"):
            cursor = self._sagas.find(query, {"_id": 1}).limit(limit)
            return [document["_id"] async for document in cursor]

    # -- batched marks, lifecycle -------------------------------------------------------------

    async def flush(self, *, due_only: bool = False) -> None:
        """Write the queued marks (every one, or with `due_only` those that waited `MARK_DELAY`)
        and claim clean-ups now; `StoreError` (queue kept) on failure."""
        await self._marks.flush(due_only=due_only)

    async def close(self) -> None:
        """Write what is queued (a failure is logged, not raised) and close; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush()  # waits for a flush in progress, then writes the rest
        except StoreError as exc:
            log.warning("marks_lost_on_close", marks=len(self._marks), error=str(exc))
        await self._inserting.close()
        await self._claims.close()
        await self._marks.close()
        await self.client.close()

    async def _write_marks(self, marks: dict[str, int]) -> None:
        # On FerretDB v1 every write of a saga document here holds the saga's lock, which keeps
        # this process's writes of it in order (`ferretdb`).
        in_order = (
            self._claims.writing.hold_all(marks)
            if self.version_claims
            else contextlib.nullcontext()
        )
        with store_errors("mark outboxes published"):
            self.counts.round_trips += 1
            async with in_order:
                result = await self._sagas.bulk_write(
                    [UpdateOne(*mark_update(*mark)) for mark in marks.items()], ordered=False
                )
            self.counts.writes += result.modified_count

    async def _shrink_claims(self, keys: set[str]) -> None:
        with store_errors("mark outboxes published"):
            await self._claims.shrink(keys)

    # -- machine definitions and pauses ---------------------------------------------------------

    async def register_definitions(self, registry: MachineRegistry) -> None:
        """Store a snapshot of each definition version; `DefinitionChanged` for a changed one."""
        with store_errors("store machine snapshots"):
            await definitions.register_definitions(
                self._machines, registry, dt.datetime.now(dt.UTC)
            )

    async def stored_definitions(self) -> list[MachineDefinition]:
        """Every stored snapshot, including versions no longer in the files."""
        with store_errors("read machine snapshots"):
            return await definitions.stored_definitions(self._machines)

    async def pause_machine(self, machine: str, *, by: str, reason: str | None = None) -> None:
        """Refuse new sagas of `machine` until `resume_machine` (running ones go on)."""
        await pauses.pause(self._pauses, machine, by=by, reason=reason)

    async def resume_machine(self, machine: str) -> bool:
        """Let new sagas of `machine` start again; False when it was not paused."""
        return await pauses.resume(self._pauses, machine)

    async def paused_machines(self) -> dict[str, MachinePause]:
        return await pauses.paused(self._pauses)
