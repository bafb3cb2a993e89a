"""Group commit: writes that arrive while a write is out go to the server together in the next.

A write alone goes out at once; under load, the sagas saving at the same moment share one call
(one round trip, and on FerretDB one transaction for an insert of many). Each caller gets its own
outcome: the batch's writer returns one per item, `None` or the exception for that item.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar

import bson
from bson.raw_bson import RawBSONDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

from orchestrator.adapters.mongo.documents import Document
from orchestrator.errors import StoreError

DUPLICATE_KEY: Final = 11000
MAX_BATCH: Final = 256
"""Items written in one call at the most; the rest wait for the next."""

T = TypeVar("T")

WriteBatch = Callable[[list[T]], Awaitable[Sequence[BaseException | None]]]
"""Writes the items; returns an outcome per item, in order. Raising fails every item."""


class Batcher(Generic[T]):
    """Gathers concurrent writes of one kind; `submit` returns once its item is written."""

    def __init__(self, write: WriteBatch[T], *, name: str, max_batch: int = MAX_BATCH) -> None:
        self._write = write
        self._name = name
        self._max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.calls = 0
        """Calls made to the writer."""

    async def submit(self, item: T) -> None:
        """Write `item` with whatever else is waiting; its exception, if it failed.

        A caller cancelled while it waits stops waiting; its item may still be written.
        """
        if self._closed:
            raise StoreError(f"MongoDB: {self._name}: the store is closed")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"sagawire-{self._name}"
            )
        await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                self.calls += 1
                try:
                    outcomes: Sequence[BaseException | None] = await self._write(
                        [item for item, _ in batch]
                    )
                except asyncio.CancelledError:  # closed: nobody waits in vain
                    self._fail([future for _, future in batch])
                    raise
                except Exception as exc:  # noqa: BLE001 - each caller gets it
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller was cancelled
                        continue
                    if outcome is None:
                        future.set_result(None)
                    else:
                        future.set_exception(outcome)
        finally:
            self._task = None

    async def close(self) -> None:
        """Stop: a batch being written is cancelled, and whoever waits gets `StoreError`."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail([future for _, future in self._waiting])
        self._waiting.clear()

    def _fail(self, futures: list[asyncio.Future[None]]) -> None:
        for future in futures:
            if not future.done():
                future.set_exception(StoreError(f"MongoDB: {self._name}: the store closed"))


def encode(document: Document) -> RawBSONDocument:
    """The document as BSON, encoded now: a document that cannot be encoded fails its own
    write here, never a batch it would have joined (and is encoded once when written twice)."""
    return RawBSONDocument(bson.encode(document))


async def insert_all(
    collection: AsyncCollection[Any], documents: Sequence[Mapping[str, Any]]
) -> list[BaseException | None]:
    """One unordered insert of `documents`, each encoded already (`encode`) or made only of
    values that always encode; the outcome of each: a duplicate key fails its own only."""
    try:
        await collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        failed = {error["index"]: error for error in exc.details.get("writeErrors", [])}
        return [write_error(failed[i]) if i in failed else None for i in range(len(documents))]
    return [None] * len(documents)


def write_error(error: Mapping[str, Any]) -> WriteError:
    """One document's error in a bulk write, as the driver raises it for a single write."""
    code, message = int(error.get("code", 0)), str(error.get("errmsg", ""))
    if code == DUPLICATE_KEY:
        return DuplicateKeyError(message, code, dict(error))
    return WriteError(message, code, dict(error))
