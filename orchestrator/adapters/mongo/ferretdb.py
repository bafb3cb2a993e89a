"""FerretDB v1: what it lacks of MongoDB, and how the store works around each gap.

The workarounds live here, but for a few one-liners named below. `connect()` turns
them on when `buildInfo` names FerretDB v1 (`is_ferretdb_v1`); on MongoDB none of this runs.
FerretDB v1 lacks:

- An atomic conditional write. It evaluates a filter on the documents it read, then writes by
  `_id`, so of two saves from the same version both "match" and the last one wins. Its only atomic
  check is a unique key on insert, so every save first inserts a claim of its version into
  `saga_versions` (`VersionClaims`): one writer per version gets it, the others get
  `VersionConflict`. The claim holds the new document and is the committed state; `sagas` is a
  projection written after it, for queries. A load that finds a newer claim uses and repairs it.
  Claims older than the latest are shrunk to their key, which must stay: it stops a stale writer
  from claiming that version again. Cost: a second write per save, a second read per load.
- An ordered write of a document: a conditional update writes the whole document it read, so a
  mark of version 3 racing the save of version 4 would put version 3 back. `KeyedLocks` keep this
  process's writes of each saga document in order.
- Hence `sagas` can fall behind its claims: a stale write of another process, or one the server
  runs after its caller was cancelled, can put an older version back. `due`/`with_outbox`
  only choose sagas to load, and the load repairs them; so that counts and listings catch up too,
  `ProjectionChecks` read each saga document again five seconds after its last save here (ten
  seconds after a save that finished it) and repair it when it is behind.
- Many concurrent writers: its SQLite backend writes one transaction at a time, so its client
  gets `FERRETDB_POOL_SIZE` connections (`connection`).
- Queries from secondary indexes. It looks documents up by `_id` alone (with the project's
  patch, whatever else the filter holds) and reads the whole collection for any other filter,
  while its SQLite backend still keeps each index up to date on every write: the query indexes
  cost a quarter of its CPU under load and served nothing, so `connect()` leaves them out
  (`MongoSagaStore.secondary_indexes`).
- Cheap documents. It turns every document it reads or writes into a tree of values, one per
  field, and back: a saga's history, most of its document and read by no query, is written as
  one BSON value there (`documents.to_document`), which it handles as one string
  (`MongoSagaStore.packed_history`).
- Partial indexes (`documents`: a sparse index on `outbox_pending` instead), several indexes in one
  createIndexes, and creating a collection under load (`MongoSagaStore.ensure_indexes`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import structlog
from bson.raw_bson import RawBSONDocument
from pymongo import ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from orchestrator.adapters.mongo.batches import Batcher, encode, insert_all
from orchestrator.adapters.mongo.documents import (
    Document,
    WriteCounts,
    claim_key,
    store_errors,
    unpack,
)
from orchestrator.core.saga import Saga, SagaStatus
from orchestrator.errors import VersionConflict
from participants_sdk.keyed_locks import KeyedLocks

log = structlog.get_logger("sagawire.store")

FERRETDB_POOL_SIZE: Final = 10
"""Connections per client to FerretDB v1 when the URL sets no `maxPoolSize`: many more concurrent
writers only queue in SQLite's busy handler, unfairly, and some give up after 10 s with
"database is locked"."""
PROJECTION_CHECK_DELAYS: Final = (5.0, 10.0)
"""Seconds after a saga's last save when its saga document is read again and repaired if it is
behind: the first when the save left it running, the second when it finished it. A finished saga
is checked later, once, since writes the server runs late may land after a first check; a running
one is checked again after each save, and repaired by its next load."""


def is_ferretdb_v1(build_info: Mapping[str, Any]) -> bool:
    """Whether the server's `buildInfo` answer comes from FerretDB v1."""
    return str(build_info.get("ferretdbVersion", "")).startswith("v1.")


class _NeverInserted(Exception):
    """A claimed save of a saga whose document does not exist."""


class VersionClaims:
    """Saves checked by claim inserts, loads that repair the projection, ordered writes of it."""

    def __init__(
        self,
        sagas: AsyncCollection[Document],
        claims: AsyncCollection[Document],
        counts: WriteCounts,
    ) -> None:
        self.sagas = sagas
        self.claims = claims
        self.counts = counts
        self.writing = KeyedLocks()
        """One write at a time per saga document here: saves, repairs and the store's marks."""
        soon, finished = PROJECTION_CHECK_DELAYS
        self.projection_checks = (
            ProjectionChecks(self.check_projection, soon),
            ProjectionChecks(self.check_projection, finished),
        )
        """A save that leaves its saga running is checked after the first delay, one that finishes
        it after the second."""
        self.repairs = 0
        """Saga documents found behind their newest claim by a check, and repaired."""
        self._claiming = Batcher(self._insert_claims, name="version-claims")
        self._projecting = Batcher(self._replace_projections, name="saga-documents")

    async def save(self, saga: Saga, document: Document) -> str | None:
        """Claim the version after `saga`'s, then write `document`; the key of the claim this
        one supersedes (to shrink), if any. Concurrent saves share each of the two calls."""
        version = saga.version + 1
        claim = claim_key(saga.saga_id, version)
        encoded = encode(document)  # once, for the claim and the saga document
        try:
            await self._claiming.submit(
                # The document as BSON bytes: FerretDB stores a binary value as one string,
                # where an embedded document costs it a tree of values to build and take apart
                # on every write and read of the claim. Only a load that repairs opens it.
                {"_id": claim, "saga_id": saga.saga_id, "version": version, "saga": encoded.raw}
            )
        except DuplicateKeyError:
            raise VersionConflict(saga.saga_id, saga.version) from None
        # The claim is the committed save. The saga document follows; if this write is lost or
        # overtaken, the next load finds the newer claim and repairs it.
        try:
            await self._projecting.submit((saga.saga_id, version, encoded))
        except _NeverInserted:
            await self.claims.delete_one({"_id": claim})  # a save of a saga never inserted
            raise VersionConflict(saga.saga_id, saga.version) from None
        finally:  # written, failed or cancelled: the server may still run it late
            soon, finished = self.projection_checks
            if SagaStatus(document["status"]).finished:
                soon.forget(saga.saga_id)  # the check of its finished save covers it
                finished.add(saga.saga_id, version)
            else:
                soon.add(saga.saga_id, version)
        return claim_key(saga.saga_id, saga.version) if saga.version > 1 else None

    async def _insert_claims(self, claims: list[Document]) -> list[BaseException | None]:
        """One insert of many claims; a duplicate key fails its own claim only."""
        self.counts.round_trips += 1
        outcomes = await insert_all(self.claims, claims)
        self.counts.writes += outcomes.count(None)
        return outcomes

    async def _replace_projections(
        self, saves: list[tuple[str, int, RawBSONDocument]]
    ) -> list[BaseException | None]:
        """The saga documents of claimed saves, in one call, each only over an older version."""
        async with self.writing.hold_all(saga_id for saga_id, _, _ in saves):
            self.counts.round_trips += 1
            result = await self.sagas.bulk_write(
                [
                    ReplaceOne({"_id": saga_id, "version": {"$lt": version}}, document)
                    for saga_id, version, document in saves
                ],
                ordered=False,
            )
        self.counts.writes += result.matched_count
        if result.matched_count == len(saves):
            return [None] * len(saves)
        # Some found a newer document (a repair, another replica), or none at all: which?
        return [
            None
            if await self.sagas.find_one({"_id": saga_id}, {"_id": 1}) is not None
            else _NeverInserted()
            for saga_id, _, _ in saves
        ]

    async def shrink(self, keys: set[str]) -> None:
        """Drop the document from superseded claims; their key stays."""
        self.counts.round_trips += 1
        await self.claims.bulk_write(
            [UpdateOne({"_id": key}, {"$unset": {"saga": ""}}) for key in keys], ordered=False
        )

    async def load(self, saga_id: str) -> Document | None:
        """The saga document, or the newest claim above its version.

        Claims are looked up by key, version after version, so every read is by `_id` (the only
        lookup FerretDB v1 answers from an index). A claim shrunk to its key means a newer one
        exists, so the walk goes on past it; it ends at the first version nobody claimed.
        """
        stored = await self.sagas.find_one({"_id": saga_id})
        if stored is None:
            return None  # a claim alone is a save of a saga never inserted
        newest: Document | None = None
        version = int(stored["version"])
        while claim := await self.claims.find_one({"_id": claim_key(saga_id, version + 1)}):
            version += 1
            self.counts.round_trips += 1
            if "saga" in claim:
                newest = claim
        if newest is None:
            return stored
        newer = claimed_document(newest["saga"])
        self.counts.round_trips += 1
        async with self.writing.hold(saga_id):
            result = await self.sagas.replace_one(
                {"_id": saga_id, "version": {"$lt": newest["version"]}}, newer
            )
        self.counts.writes += result.modified_count
        return newer

    async def check_projection(self, saga_id: str, version: int) -> None:
        """Repair the saga document if it is older than `version`, which was claimed here."""
        with store_errors("check saga document", saga_id):
            stored = await self.sagas.find_one({"_id": saga_id}, {"version": 1})
            if stored is None or int(stored["version"]) >= version:
                return
            await self.load(saga_id)
        self.repairs += 1
        log.info("saga_document_repaired", saga_id=saga_id, found=stored["version"], saved=version)

    async def close(self) -> None:
        await self._claiming.close()
        await self._projecting.close()
        for checks in self.projection_checks:
            await checks.close()


def claimed_document(saga: bytes | Document) -> Document:
    """The saga document a claim holds: BSON bytes, or an embedded document as claims made by
    earlier versions of the store hold it."""
    return unpack(saga) if isinstance(saga, bytes) else dict(saga)


Check = Callable[[str, int], Awaitable[None]]


class ProjectionChecks:
    """Each check runs `delay` seconds after the last save of its saga; a save made before the
    check is due replaces the one it would have checked."""

    def __init__(self, check: Check, delay: float) -> None:
        self._check = check
        self.delay = delay
        self._latest: dict[str, int] = {}
        """Saga id -> the newest version saved here that a check will look for."""
        self._due: collections.deque[tuple[float, str]] = collections.deque()
        self._scheduled: collections.Counter[str] = collections.Counter()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Sagas with a check to come."""
        return len(self._latest)

    def forget(self, saga_id: str) -> None:
        """Drop the check to come of this saga, if any."""
        self._latest.pop(saga_id, None)

    def add(self, saga_id: str, version: int) -> None:
        loop = asyncio.get_running_loop()
        if self._latest.get(saga_id, 0) < version:
            self._latest[saga_id] = version
        # One delay for all: entries are due in the order they were added.
        self._due.append((loop.time() + self.delay, saga_id))
        self._scheduled[saga_id] += 1
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="sagawire-projection-checks")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._due:
            when, saga_id = self._due[0]
            if when > loop.time():
                await asyncio.sleep(when - loop.time())
            self._due.popleft()
            self._scheduled[saga_id] -= 1
            if self._scheduled[saga_id]:
                continue  # saved again since: that later entry checks the newer version
            del self._scheduled[saga_id]
            version = self._latest.pop(saga_id, None)
            if version is None:
                continue  # forgotten
            try:
                await self._check(saga_id, version)
            except Exception:  # one failed check must not stop the others
                log.warning("projection_check_failed", saga_id=saga_id, exc_info=True)

    async def close(self) -> None:
        """Drop the checks to come: a later load repairs what they would have."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._due.clear()
        self._latest.clear()
        self._scheduled.clear()
