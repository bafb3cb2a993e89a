"""`MongoSagaStore`: the saga store on MongoDB through PyMongo's async API.

Collection `sagas`, one document per saga: the `Saga` model as dumped, `_id` = saga id, plus the
derived `outbox_pending: true` while the outbox holds commands (absent otherwise). FerretDB v1 has
no partial indexes, so instead of a partial index on "outbox not empty" this field carries a
sparse index: on MongoDB it then holds only the sagas with a pending outbox.

A save is one write, `replace_one({_id, version: loaded}, next version)`: MongoDB applies the
filter and the write atomically, so of two writers from the same version exactly one wins.

FerretDB v1 does not: it evaluates a filter on the documents it read, then writes by `_id`, so two
concurrent conditional writes both "match" and the last one wins. The only atomic check it has is
a unique key on insert. On FerretDB v1 (found by `connect()`, or `version_claims=True`) every save
therefore first inserts a claim `{_id: "<saga>#<version>", saga_id, version, saga: <document>}`
into `saga_versions`: one writer per version gets it, the others get `VersionConflict`. The claim
holds the new document, so it is the committed state: `sagas` is then written as a projection for
queries, and a load that finds a newer claim than the saga document uses (and repairs) it. Claims
older than the latest are shrunk to their key, which must stay: it is what stops a stale writer
from claiming that version again. This costs a second write per save and a second read per load,
on FerretDB only. There `sagas` may lag behind for a while (a stale write of another process,
or one the server runs after its caller was cancelled, rewrites an older version): the queries on
it (`due`, `with_outbox`) only choose which sagas to look at, and the load that follows reads the
claim and repairs the document. So that counts and listings catch up too, each saga document is
read again a second after its last save here, and ten seconds after a save that finished the
saga, and repaired when it is behind (`projection_checks`).

Times: BSON keeps milliseconds, so a loaded saga's datetimes are the saved ones truncated to the
millisecond, timezone-aware UTC. `insert` and `save` return the saga as given (not truncated); with
a millisecond clock both are the same. Only plain MongoDB is used: no transactions, `$expr` or
partial indexes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any, Final, NamedTuple, Self

import pymongo
import structlog
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import CollectionInvalid, DuplicateKeyError, OperationFailure, PyMongoError

from orchestrator.adapters import mongo_definitions, mongo_pauses
from orchestrator.adapters.keyed_locks import KeyedLocks
from orchestrator.adapters.mongo_documents import (
    Document,
    claim_key,
    driver_reason,
    from_document,
    mark_update,
    store_errors,
    to_document,
)
from orchestrator.adapters.mongo_events import ServerStateLog
from orchestrator.adapters.projection_checks import ProjectionChecks
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.saga import Saga, SagaStatus
from orchestrator.errors import ConfigurationError, SagaExists, StoreError, VersionConflict
from orchestrator.logs import redact
from orchestrator.machines import MachineRegistry
from orchestrator.pauses import MachinePause

log = structlog.get_logger("sagawire.store")


DEFAULT_DATABASE: Final = "sagawire"
MARK_DELAY: Final = 1.0
"""Seconds a `mark_published` waits before it is written. A save of a newer version of the saga
in the meantime makes it moot (that version's document holds only the commands not yet
published), and it is dropped unwritten: under load most steps are answered well within a
second, so most marks are never written."""
MARK_INTERVAL: Final = 0.02
"""Seconds a cleanup of old version claims may wait to be written together with others."""
MARK_BATCH: Final = 500
"""Queued marks that trigger a write at once, due or not."""
FERRETDB_POOL_SIZE: Final = 10
"""Connections per client to FerretDB v1 when the URL sets no `maxPoolSize`. Its SQLite backend
writes one transaction at a time: many more concurrent writers only queue in SQLite's busy
handler, unfairly, and some give up after 10 s with "database is locked"."""
PROJECTION_CHECK_DELAYS: Final = (1.0, 10.0)
"""FerretDB v1: seconds after a saga's last save, and after its last save if finished, when its
saga document is read again and repaired if it is behind (see `projection_checks`)."""

_UNFINISHED: Final = [SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value]

# (name, keys, options): every query the runtime and the CLI make has an index.
SAGA_INDEXES: Final[list[tuple[str, list[tuple[str, int]], dict[str, Any]]]] = [
    # due(): status in (running, compensating) and deadline <= now, earliest first; also any
    # query by status alone (index prefix).
    ("status_deadline", [("status", 1), ("deadline", 1)], {}),
    ("machine_version_status", [("machine", 1), ("machine_version", 1), ("status", 1)], {}),
    ("machine_state", [("machine", 1), ("state", 1)], {}),
    ("label", [("label", 1)], {}),
    ("updated_at", [("updated_at", -1)], {}),
    # with_outbox(); sparse, so on MongoDB it holds only sagas with a pending outbox.
    ("outbox_pending", [("outbox_pending", 1)], {"sparse": True}),
]


class QueuedMark(NamedTuple):
    version: int
    since: float
    """When a mark of this saga was first queued (monotonic): it keeps its place in the queue
    when a newer version replaces it."""


class MongoSagaStore:
    """`SagaStore` on MongoDB. `connect()`, `ensure_indexes()` once, `close()` at the end.

    `mark_published` is batched: marks are queued and written by a background task every
    `MARK_INTERVAL` seconds or `MARK_BATCH` marks, in one unordered `bulk_write`. A mark lost in
    a crash only means that outbox is published again on recovery, which participants dedupe by
    idempotency key. `flush()` writes the queue now.
    """

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str = DEFAULT_DATABASE,
        *,
        version_claims: bool = False,
    ) -> None:
        self.client = client
        self.database = client[database]
        self.version_claims = version_claims
        """Check versions with claim inserts (FerretDB v1), not the atomic conditional write."""
        self._sagas: AsyncCollection[Document] = self.database["sagas"]
        self._claims: AsyncCollection[Document] = self.database["saga_versions"]
        self._machines: AsyncCollection[Document] = self.database["machines"]
        self._pauses: AsyncCollection[Document] = self.database["machine_pauses"]
        self.writes = 0
        """Saga documents written: inserted, replaced, outbox cleared, version claimed."""
        self.round_trips = 0
        """Database calls that write sagas or claims, successful or not."""
        self._marks: dict[str, QueuedMark] = {}
        """The marks waiting to be written, by saga id, oldest first."""
        self.marks_dropped = 0
        """Marks made moot by a newer save before they were due, never written."""
        self._marks_writing: dict[str, int] = {}
        self._old_claims: set[str] = set()
        self._queued = asyncio.Event()
        self._full = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._writing = KeyedLocks()
        """Claims mode: one write at a time per saga document here (see `_mark_one`)."""
        self._flusher: asyncio.Task[None] | None = None
        soon, finished = PROJECTION_CHECK_DELAYS
        self.projection_checks = (
            ProjectionChecks(self._check_projection, soon),
            ProjectionChecks(self._check_projection, finished),
        )
        """Claims mode: every save is checked after the first delay, a finished one again."""
        self.projection_repairs = 0
        """Claims mode: saga documents found behind their newest claim by a check, and repaired."""
        self.server_state: ServerStateLog | None = None
        """Set by `connect()`: the server's losses and returns as the driver saw them."""
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        database: str | None = None,
        *,
        # The driver's own timeout (below), not asyncio's: its error says why it failed.
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> MongoSagaStore:
        """Connect and ping; `ConfigurationError` at once when the server cannot be reached.

        The database is `database`, else the URL's path, else `sagawire`.
        """
        where = redact(url)
        try:
            client, events = _client(url, where)
        except (PyMongoError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"invalid MongoDB URL {where}: {driver_reason(exc)}") from exc
        try:
            # A timeout for these calls only (it bounds server selection too): later calls keep
            # the client's default serverSelectionTimeoutMS (30 s), which rides out an election.
            with pymongo.timeout(timeout):
                await client.admin.command("ping")
                build = await client.admin.command("buildInfo")
        except OperationFailure as exc:
            await _close_failed(client)
            raise ConfigurationError(
                f"MongoDB at {where} refused the connection: {driver_reason(exc)}; "
                "check the user, password and authSource in the URL"
            ) from exc
        except PyMongoError as exc:
            await _close_failed(client)
            raise ConfigurationError(
                f"cannot reach MongoDB at {where}: {driver_reason(exc)}; "
                "is it running? see `make services`"
            ) from exc
        name = database or client.get_default_database(DEFAULT_DATABASE).name
        ferretdb_v1 = str(build.get("ferretdbVersion", "")).startswith("v1.")
        options: dict[str, Any] = {}
        if ferretdb_v1 and "maxpoolsize=" not in url.lower():
            options["maxPoolSize"] = FERRETDB_POOL_SIZE
            log.info("ferretdb_pool_limited", url=where, max_pool_size=FERRETDB_POOL_SIZE)
        if client.options.retry_writes and not _retryable_writes(client):
            options["retryWrites"] = False
            log.info("mongodb_retry_writes_off", url=where, reason="standalone server")
        if options:
            await client.close()
            client, events = _client(url, where, options)
        store = cls(client, name, version_claims=ferretdb_v1)
        store.server_state = events
        return store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def ensure_indexes(self) -> None:
        """Create the indexes that are missing; safe to call at every start."""
        with store_errors("create indexes"):
            # One index per call: FerretDB v1 drops the connection when a createIndexes command
            # holding several indexes meets ones that exist already.
            for name, keys, options in SAGA_INDEXES:
                await self._sagas.create_index(keys, name=name, **options)
            if self.version_claims:
                # Created now, not by the first claim: FerretDB v1 deadlocks when it creates a
                # collection while every connection of its pool is busy, as under load.
                with contextlib.suppress(CollectionInvalid):
                    await self.database.create_collection(self._claims.name)

    # -- SagaStore --------------------------------------------------------------------------

    async def load(self, saga_id: str) -> Saga | None:
        with store_errors("load saga", saga_id):
            if self.version_claims:
                document = await self._load_claimed(saga_id)
            else:
                document = await self._sagas.find_one({"_id": saga_id})
        if document is None:
            return None
        saga = from_document(document)
        queued = self._marks.get(saga_id)
        if saga.outbox and saga.version in (
            queued.version if queued is not None else None,
            self._marks_writing.get(saga_id),
        ):
            saga.outbox = []  # published, and the mark is still queued: read our own writes
        return saga

    async def insert(self, saga: Saga) -> Saga:
        stored = saga.with_version(1)
        self.round_trips += 1
        with store_errors("insert saga", saga.saga_id):
            try:
                await self._sagas.insert_one(to_document(stored))
            except DuplicateKeyError:
                raise SagaExists(saga.saga_id) from None
        self.writes += 1
        return stored

    async def save(self, saga: Saga) -> Saga:
        stored = saga.with_version(saga.version + 1)
        document = to_document(stored)
        with store_errors("save saga", saga.saga_id):
            if self.version_claims:
                await self._save_claimed(saga, document)
            else:
                self.round_trips += 1
                result = await self._sagas.replace_one(
                    {"_id": saga.saga_id, "version": saga.version}, document
                )
                if result.matched_count == 0:
                    # Missing, or saved by another: the caller reloads either way, and telling
                    # the two apart would cost a second call.
                    raise VersionConflict(saga.saga_id, saga.version)
                self.writes += 1
        self._drop_mark(saga.saga_id, stored.version)
        return stored

    async def mark_published(self, saga_id: str, version: int) -> None:
        if self._closed:
            raise StoreError("the MongoDB saga store is closed")
        self._queue_mark(saga_id, version, time.monotonic())
        self._wake_flusher(len(self._marks))

    def _queue_mark(self, saga_id: str, version: int, now: float) -> None:
        """Queue a mark of `version` unless one as new is queued. A newer version keeps the
        place and the time of the one it replaces, so the queue stays oldest first."""
        queued = self._marks.get(saga_id)
        if queued is None:
            self._marks[saga_id] = QueuedMark(version, now)
        elif queued.version < version:
            self._marks[saga_id] = queued._replace(version=version)

    def _drop_mark(self, saga_id: str, saved: int) -> None:
        """A save of version `saved` makes a queued mark of an older version moot."""
        queued = self._marks.get(saga_id)
        if queued is not None and queued.version < saved:
            del self._marks[saga_id]
            self.marks_dropped += 1

    async def due(self, now: dt.datetime, limit: int) -> list[str]:
        if limit <= 0:
            return []  # a limit of 0 means "no limit" to MongoDB
        query = {"status": {"$in": _UNFINISHED}, "deadline": {"$lte": now}}
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
        async with self._flush_lock:
            marks = self._take_marks(due_only=due_only)
            old_claims, self._old_claims = self._old_claims, set()
            self._marks_writing = marks
            try:
                with store_errors("mark outboxes published"):
                    if marks and self.version_claims:
                        await asyncio.gather(*(self._mark_one(*mark) for mark in marks.items()))
                        marks = {}
                    elif marks:
                        self.round_trips += 1
                        result = await self._sagas.bulk_write(
                            [
                                UpdateOne(*mark_update(saga_id, version))
                                for saga_id, version in marks.items()
                            ],
                            ordered=False,
                        )
                        self.writes += result.modified_count
                        marks = {}
                    if old_claims:
                        self.round_trips += 1
                        await self._claims.bulk_write(
                            [
                                UpdateOne({"_id": key}, {"$unset": {"saga": ""}})
                                for key in old_claims
                            ],
                            ordered=False,
                        )
            except BaseException:
                # Failed, or cancelled by close(): keep what is unwritten for the next try. Doing a
                # mark twice is harmless: each one is guarded by its version.
                now = time.monotonic()
                for saga_id, version in marks.items():
                    self._queue_mark(saga_id, version, now)
                self._old_claims |= old_claims
                self._queued.set()
                raise
            finally:
                self._marks_writing = {}

    async def close(self) -> None:
        """Write what is queued (a failure is logged, not raised) and close; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush()  # waits for a flush in progress, then writes the rest
        except StoreError as exc:
            log.warning("marks_lost_on_close", marks=len(self._marks), error=str(exc))
        for checks in self.projection_checks:
            await checks.close()
        if self._flusher is not None:
            # Idle now (nothing is queued), so cancelling it interrupts no database call.
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.client.close()

    def _wake_flusher(self, queued: int) -> None:
        self._queued.set()
        if queued >= MARK_BATCH:
            self._full.set()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name="sagawire-mongo-marks"
            )

    def _take_marks(self, *, due_only: bool) -> dict[str, int]:
        """Remove and return the queued marks to write now."""
        if not due_only or len(self._marks) >= MARK_BATCH:
            queued, self._marks = self._marks, {}
            return {saga_id: mark.version for saga_id, mark in queued.items()}
        cutoff = time.monotonic() - MARK_DELAY
        taken = {}
        for saga_id, mark in list(self._marks.items()):
            if mark.since > cutoff:
                break
            taken[saga_id] = mark.version
            del self._marks[saga_id]
        return taken

    def _next_flush_in(self) -> float | None:
        """Seconds until something queued is due to be written; None when nothing is queued."""
        if len(self._marks) >= MARK_BATCH:
            return 0.0
        waits = []
        if self._old_claims:
            waits.append(MARK_INTERVAL)
        if self._marks:
            oldest = next(iter(self._marks.values()))
            waits.append(max(oldest.since + MARK_DELAY - time.monotonic(), 0.0))
        return min(waits, default=None)

    async def _flush_loop(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            wait = self._next_flush_in()
            if wait is None:
                continue
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._full.wait()
            self._full.clear()
            try:
                await self.flush(due_only=True)
                if self._marks or self._old_claims:
                    self._queued.set()  # not due yet: come back when they are
            except StoreError as exc:
                # Kept for the next round; meanwhile at worst an outbox is published twice.
                log.warning("mark_published_failed", marks=len(self._marks), error=str(exc))
                await asyncio.sleep(MARK_INTERVAL)
            except Exception:
                # This task must outlive a bug in one round, or marks would pile up unwritten.
                log.exception("mark_published_failed", marks=len(self._marks))
                await asyncio.sleep(MARK_INTERVAL)

    # -- version claims (FerretDB v1) ---------------------------------------------------------

    async def _save_claimed(self, saga: Saga, document: Document) -> None:
        claim = claim_key(saga.saga_id, saga.version + 1)
        self.round_trips += 1
        try:
            await self._claims.insert_one(
                {
                    "_id": claim,
                    "saga_id": saga.saga_id,
                    "version": saga.version + 1,
                    "saga": document,
                }
            )
        except DuplicateKeyError:
            raise VersionConflict(saga.saga_id, saga.version) from None
        self.writes += 1
        # The claim is the committed save. The saga document follows; if this write is lost or
        # overtaken, the next load finds the newer claim and repairs it.
        self.round_trips += 1
        try:
            async with self._writing.hold(saga.saga_id):
                result = await self._sagas.replace_one(
                    {"_id": saga.saga_id, "version": {"$lt": saga.version + 1}}, document
                )
        finally:  # written, failed or cancelled: the server may still run it late
            soon, finished = self.projection_checks
            soon.add(saga.saga_id, saga.version + 1)
            if SagaStatus(document["status"]).finished:
                finished.add(saga.saga_id, saga.version + 1)
        if result.matched_count:
            self.writes += 1
        elif await self._sagas.find_one({"_id": saga.saga_id}, {"_id": 1}) is None:
            await self._claims.delete_one({"_id": claim})  # a save of a saga never inserted
            raise VersionConflict(saga.saga_id, saga.version)
        if saga.version > 1:
            self._old_claims.add(claim_key(saga.saga_id, saga.version))
            self._wake_flusher(len(self._marks))

    async def _mark_one(self, saga_id: str, version: int) -> None:
        """One mark, alone for its saga's document in this process.

        FerretDB v1 writes a conditional update as the whole document it read: a mark of version
        3 racing the save of version 4 would put version 3 back. Holding the saga's lock for
        each write of the saga document (marks, saves, repairs) keeps them in order here.
        """
        self.round_trips += 1
        async with self._writing.hold(saga_id):
            result = await self._sagas.update_one(*mark_update(saga_id, version))
        self.writes += result.modified_count

    async def _check_projection(self, saga_id: str, version: int) -> None:
        """Repair the saga document if it is older than `version`, which was claimed here."""
        with store_errors("check saga document", saga_id):
            stored = await self._sagas.find_one({"_id": saga_id}, {"version": 1})
            if stored is None or int(stored["version"]) >= version:
                return
            await self._load_claimed(saga_id)
        self.projection_repairs += 1
        log.info("saga_document_repaired", saga_id=saga_id, found=stored["version"], saved=version)

    async def _load_claimed(self, saga_id: str) -> Document | None:
        """The saga document, or the newest claim above its version.

        Claims are looked up by key, version after version, so every read is by `_id` (the only
        lookup FerretDB v1 answers from an index). A claim shrunk to its key means a newer one
        exists, so the walk goes on past it; it ends at the first version nobody claimed.
        """
        stored = await self._sagas.find_one({"_id": saga_id})
        if stored is None:
            return None  # a claim alone is a save of a saga never inserted
        newest: Document | None = None
        version = int(stored["version"])
        while claim := await self._claims.find_one({"_id": claim_key(saga_id, version + 1)}):
            version += 1
            self.round_trips += 1
            if "saga" in claim:
                newest = claim
        if newest is None:
            return stored
        newer: Document = newest["saga"]
        self.round_trips += 1
        async with self._writing.hold(saga_id):
            result = await self._sagas.replace_one(
                {"_id": saga_id, "version": {"$lt": newest["version"]}}, dict(newer)
            )
        self.writes += result.modified_count
        return newer

    # -- machine definitions, read helpers ----------------------------------------------------

    async def register_definitions(self, registry: MachineRegistry) -> None:
        """Store a snapshot of each definition version; `DefinitionChanged` for a changed one."""
        with store_errors("store machine snapshots"):
            await mongo_definitions.register_definitions(
                self._machines, registry, dt.datetime.now(dt.UTC)
            )

    async def stored_definitions(self) -> list[MachineDefinition]:
        """Every stored snapshot, including versions no longer in the files."""
        with store_errors("read machine snapshots"):
            return await mongo_definitions.stored_definitions(self._machines)

    async def pause_machine(self, machine: str, *, by: str, reason: str | None = None) -> None:
        """Refuse new sagas of `machine` until `resume_machine` (running ones go on)."""
        await mongo_pauses.pause(self._pauses, machine, by=by, reason=reason)

    async def resume_machine(self, machine: str) -> bool:
        """Let new sagas of `machine` start again; False when it was not paused."""
        return await mongo_pauses.resume(self._pauses, machine)

    async def paused_machines(self) -> dict[str, MachinePause]:
        return await mongo_pauses.paused(self._pauses)


def _client(
    url: str, where: str, options: dict[str, Any] | None = None
) -> tuple[AsyncMongoClient[Document], ServerStateLog]:
    """A client with the store's options (and `options`) and a log of its server's state."""
    events = ServerStateLog(where)
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        url, tz_aware=True, tzinfo=dt.UTC, event_listeners=[events], **(options or {})
    )
    return client, events


def _retryable_writes(client: AsyncMongoClient[Document]) -> bool:
    """Whether the server the client has found can retry writes (a replica set or mongos).

    A standalone server (FerretDB is one) cannot, and there PyMongo 4.20's retry of a write whose
    first try found the connection pool paused does harm: on the second try it checks out a
    connection and raises the first try's error from inside that checkout, which the driver takes
    for a new network error on a current connection. It marks the server unknown and pauses the
    pool again, right after the monitor made it ready. With many writes waiting for the server
    after an outage, each return of the server is undone at once, and the store can stay on
    "connection pool paused" for minutes. With `retryWrites=false` a write fails on its first
    try, its error is counted stale, and the daemon's own retry writes again once the pool is
    ready.
    """
    servers = client.topology_description.server_descriptions().values()
    return any(server.retryable_writes_supported for server in servers)


async def _close_failed(client: AsyncMongoClient[Document]) -> None:
    """Close a client whose server did not answer.

    Its monitor retries the connection at once while a server is being selected; PyMongo 4.20
    leaks the socket of a connection attempt that `close()` cancels (PYTHON-5867). Attempts to
    an unreachable server end within milliseconds, and after that the monitor sleeps.
    """
    await asyncio.sleep(0.05)
    await client.close()
