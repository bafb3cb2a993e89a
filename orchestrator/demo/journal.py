"""A demo service's durable memory: one JSON line per reply it stored for an idempotency key.

The journal is both the service's dedupe store and its ledger of effects. A real participant
commits its effect and its dedupe record in one transaction; the demo's effect *is* the record,
so a service SIGKILLed mid-handler either applied a step (the line is written, and a
redelivered command is answered from it) or did not (no line, and the redelivery applies it).
A key with two lines that are not rejections was applied twice.

Each line goes to the file with one `write` on a descriptor opened with `O_APPEND`: once the call
returns the kernel holds it, so a process killed right after loses nothing. A last line cut short
by a machine crash is skipped on reading.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Any

from participants_sdk.dedupe import StoredReply


class Journal:
    """A `DedupeStore` that survives restarts; `applied_counts` reads its file back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._replies = {
            record["key"]: StoredReply(record["event"], record["body"], bool(record["rejected"]))
            for record in read_records(path)
        }
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def get(self, key: str) -> StoredReply | None:
        return self._replies.get(key)

    async def put(self, key: str, reply: StoredReply) -> None:
        record = {"key": key, "event": reply.event, "body": reply.body, "rejected": reply.rejected}
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        self._replies[key] = reply

    def close(self) -> None:
        os.close(self._fd)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete line of the journal at `path` (none if there is no file)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash of the machine
        if isinstance(record, dict) and {"key", "event", "body", "rejected"} <= record.keys():
            records.append(record)
    return records


def applied_counts(path: Path) -> dict[str, int]:
    """Per idempotency key, how many times the service behind the journal applied it."""
    counts: collections.Counter[str] = collections.Counter()
    for record in read_records(path):
        if not record["rejected"]:
            counts[record["key"]] += 1
    return dict(counts)
