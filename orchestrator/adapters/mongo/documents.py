"""Saga documents in MongoDB: the layout of `sagas` and `saga_versions`, and driver errors.

A saga document is the `Saga` model as dumped without its None fields, `_id` = saga id, plus the
derived `outbox_pending: true` while the outbox holds commands (absent otherwise): with a sparse
index (FerretDB v1 has no partial ones), on MongoDB that index holds only the sagas with a pending
outbox. On FerretDB v1 the history is packed into one BSON value (`to_document`). A version claim's
key is `<saga id>#<version>` (see `ferretdb`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any, Final

import bson
from bson.codec_options import CodecOptions
from bson.errors import BSONError
from pymongo.errors import PyMongoError, WriteError

from orchestrator.core.saga import Saga, SagaStatus
from orchestrator.errors import StoreError, StoreRefused
from orchestrator.logs import redact

Document = dict[str, Any]

UNFINISHED: Final = [SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value]

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

REFUSED_CODES = frozenset({2, 10334, 17419, 17420})
"""Server errors about the document itself (BadValue: a key or value it does not take;
BSONObjectTooLarge and its kin): the same write fails however often it is tried."""


@dataclasses.dataclass
class WriteCounts:
    """What the store counts of its writes (read as metrics), shared with the version claims."""

    writes: int = 0
    """Saga documents written: inserted, replaced, outbox cleared, version claimed."""
    round_trips: int = 0
    """Database calls that write sagas or claims, successful or not."""


def mark_update(saga_id: str, version: int) -> tuple[Document, Document]:
    """(filter, update) of a mark: clear the outbox of that version only."""
    return (
        {"_id": saga_id, "version": version},
        {"$set": {"outbox": []}, "$unset": {"outbox_pending": ""}},
    )


def claim_key(saga_id: str, version: int) -> str:
    return f"{saga_id}#{version}"


PACKED_CODEC: Final[CodecOptions[Document]] = CodecOptions(tz_aware=True, tzinfo=dt.UTC)
"""How a value packed as BSON bytes is read: times as the store's client reads the rest."""


def unpack(packed: bytes) -> Document:
    """A document the store packed as BSON bytes (a history, a version claim's saga)."""
    return bson.decode(packed, PACKED_CODEC)


def to_document(saga: Saga, *, packed_history: bool = False) -> Document:
    """The saga's document; with `packed_history`, its history as BSON bytes (`{"entries":
    [...]}`) rather than an array, as the store writes it on FerretDB v1 (`ferretdb`)."""
    # Without the fields that are None (in the saga and its parts, never in its data): a fifth
    # of a finished saga's size, which each write and read of it costs. A missing field reads
    # back as None, in a query too (`{"label": None}` matches it).
    document = saga.model_dump(mode="python", exclude={"saga_id"}, exclude_none=True)
    document["_id"] = saga.saga_id
    if saga.outbox:
        document["outbox_pending"] = True
    if packed_history:
        document["history"] = bson.encode({"entries": document["history"]})
    return document


def from_document(document: Document) -> Saga:
    """The saga a document holds, its history packed or not."""
    fields = dict(document)
    fields["saga_id"] = fields.pop("_id")
    fields.pop("outbox_pending", None)
    fields["history"] = history_of(fields.get("history"))
    return Saga.model_validate(fields)


def history_of(history: bytes | list[Document] | None) -> list[Document]:
    """A document's history entries, from an array or packed as BSON bytes."""
    if isinstance(history, bytes):
        entries: list[Document] = unpack(history)["entries"]
        return entries
    return history or []


UNENCODABLE: Final = (BSONError, UnicodeEncodeError, OverflowError)
"""What the driver raises for a document it cannot encode."""


@contextlib.contextmanager
def store_errors(action: str, subject: str | None = None) -> Iterator[None]:
    """Driver and encoding errors become `StoreError`, the original kept as `__cause__`."""
    about = f" {subject!r}" if subject else ""
    try:
        yield
    except UNENCODABLE as exc:  # the driver could not encode it
        raise StoreRefused(f"MongoDB: cannot {action}{about}: {driver_reason(exc)}") from exc
    except WriteError as exc:
        error = StoreRefused if exc.code in REFUSED_CODES else StoreError
        raise error(f"MongoDB: cannot {action}{about}: {driver_reason(exc)}") from exc
    except PyMongoError as exc:
        raise StoreError(f"MongoDB: cannot {action}{about}: {driver_reason(exc)}") from exc


_TIMEOUTS = re.compile(r" \(configured timeouts: [^)]*\)")


def driver_reason(exc: BaseException) -> str:
    """The driver's message on one line, without the topology dump or the timeouts."""
    text = str(exc).split(", Timeout: ", 1)[0].split(", full error: ", 1)[0]
    return redact(_TIMEOUTS.sub("", text).replace("\n", " ")) or type(exc).__name__
