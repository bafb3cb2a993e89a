"""A `DedupeStore` on MongoDB: the replies a service gave, remembered across its restarts.

    dedupe = await MongoDedupeStore.connect("mongodb://db:27017/stock")
    stock = Participant("stock", dedupe=dedupe)

Needs the `mongodb` extra (`pip install 'sagawire-sdk[mongodb]'`, PyMongo's async API). One
document per idempotency key: `{_id: key, event, body, rejected, stored_at, expires_at}`, the
body as the JSON text sent on the wire (whatever its keys and numbers, BSON holds a string).
Entries expire `retention` after they were stored (7 days by default): a command replayed from
a dead-letter queue later than that is applied again. A TTL index on `expires_at` lets the server
delete them; a server without TTL indexes (FerretDB v1) gets `purge_expired()` from the store
itself instead, every `purge_interval` seconds while it is used.

What this makes exactly-once, and what it does not (README, "Exactly once across restarts"):

- A service killed after storing a reply and before the command's ack answers the redelivered
  command from here: its handler does not run again.
- A service killed after its effect and before this store's write runs the handler again on
  redelivery, unless the effect and the key were one write: an effect document keyed by
  `ctx.idempotency_key` (a second insert fails), or, on a replica set, the effect and
  `put(key, reply_of(result), session=session)` in one transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import Any, Final, Self

import structlog
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConfigurationError, DuplicateKeyError, OperationFailure

from participants_sdk import protocol
from participants_sdk.dedupe import StoredReply
from participants_sdk.redaction import redact

Document = dict[str, Any]

DEFAULT_COLLECTION: Final = "sagawire_dedupe"
DEFAULT_RETENTION: Final = 7 * 24 * 3600.0
DEFAULT_PURGE_INTERVAL: Final = 600.0
TTL_INDEX: Final = "expires_at_ttl"
MAX_STORED_BYTES: Final = 16 * 1024 * 1024
"""A stored body is read back whatever its size: the wire's limit applies to commands."""
_NOT_IMPLEMENTED: Final = frozenset({115, 238})  # CommandNotSupported, NotImplemented

_log = structlog.get_logger(__name__)


class MongoDedupeStore:
    """Replies by idempotency key in one MongoDB collection, expiring after `retention`."""

    def __init__(
        self,
        collection: AsyncCollection[Document],
        *,
        retention: float = DEFAULT_RETENTION,
        purge_interval: float = DEFAULT_PURGE_INTERVAL,
        client: AsyncMongoClient[Document] | None = None,
    ) -> None:
        """On a collection the caller owns; `connect()` opens a client of its own instead."""
        if retention <= 0:
            raise ValueError(f"retention must be positive, got {retention}")
        self.collection = collection
        self.retention = retention
        self.purge_interval = purge_interval
        self.server_expires: bool | None = None
        """Whether the server deletes expired entries (a TTL index); None before
        `ensure_indexes()`. When False, `put` purges every `purge_interval` seconds."""
        self._client = client
        self._next_purge = 0.0

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        database: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        retention: float = DEFAULT_RETENTION,
    ) -> Self:
        """A store on `url` (database from the URL's path unless given), indexes ensured."""
        client: AsyncMongoClient[Document] = AsyncMongoClient(url, tz_aware=True)
        try:
            db = client.get_database(database) if database else client.get_default_database()
        except ConfigurationError as exc:
            await client.close()
            raise ValueError(
                f"MongoDB URL {redact(url)} names no database; add one to its path or pass "
                f"database=: {exc}"
            ) from None
        store = cls(db[collection], retention=retention, client=client)
        try:
            await store.ensure_indexes()
        except BaseException:
            await client.close()
            raise
        return store

    async def ensure_indexes(self) -> None:
        """The TTL index on `expires_at`; where the server has none, the store purges itself."""
        try:
            await self.collection.create_index(
                [("expires_at", ASCENDING)], name=TTL_INDEX, expireAfterSeconds=0
            )
        except OperationFailure as exc:
            if exc.code not in _NOT_IMPLEMENTED:
                raise
            self.server_expires = False
            _log.info(
                "dedupe store: the server has no TTL indexes; expired replies are purged by "
                "the store",
                collection=self.collection.full_name,
                error=str(exc.details.get("errmsg") if exc.details else exc),
            )
        else:
            self.server_expires = True

    async def get(self, key: str) -> StoredReply | None:
        document = await self.collection.find_one({"_id": key})
        if document is None:
            return None
        body = protocol.decode_json_object(document["body"].encode(), max_bytes=MAX_STORED_BYTES)
        return StoredReply(str(document["event"]), body, bool(document["rejected"]))

    async def put(
        self, key: str, reply: StoredReply, *, session: AsyncClientSession | None = None
    ) -> None:
        """Store the reply under `key`; a key stored before keeps its first reply.

        With `session`, in that session's transaction: the effect and this record commit
        together, and the SDK's own `put` after the handler finds the key there already.
        """
        now = dt.datetime.now(dt.UTC)
        document = {
            "_id": key,
            "event": reply.event,
            "body": protocol.encode_json(reply.body).decode(),
            "rejected": reply.rejected,
            "stored_at": now,
            "expires_at": now + dt.timedelta(seconds=self.retention),
        }
        # A duplicate key: stored in the handler's own transaction, or by another replica first.
        with contextlib.suppress(DuplicateKeyError):
            await self.collection.insert_one(document, session=session)
        if self.server_expires is False and time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.purge_interval
            await self.purge_expired()

    async def purge_expired(self, now: dt.datetime | None = None) -> int:
        """Delete the entries expired by `now`; how many. The TTL index does this on MongoDB."""
        cutoff = now or dt.datetime.now(dt.UTC)
        result = await self.collection.delete_many({"expires_at": {"$lte": cutoff}})
        return result.deleted_count

    async def close(self) -> None:
        """Close the client `connect()` opened (a collection passed in stays open)."""
        if self._client is not None:
            await self._client.close()
