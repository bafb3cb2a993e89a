"""Participant-side deduplication on the command's idempotency key.

The orchestrator sends the same idempotency key for every attempt of one visit of a step, so a
participant that stores its reply under that key can answer a retried or redelivered command
with the reply it gave before, without running the handler again.

`MemoryDedupeStore` forgets on restart and past `max_entries`; a service whose handler has
effects that must not repeat across restarts plugs in a persistent `DedupeStore` (its own
database, written in the same transaction as the effect when it can be).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class StoredReply:
    """What a participant answered: the event name, its JSON body, and whether it was a Reject."""

    event: str
    body: dict[str, Any]
    rejected: bool = False


class DedupeStore(Protocol):
    async def get(self, key: str) -> StoredReply | None:
        """The reply stored for this idempotency key, if any."""

    async def put(self, key: str, reply: StoredReply) -> None:
        """Store the reply for this idempotency key (before the reply is published)."""


class MemoryDedupeStore:
    """In-process store that evicts the least recently used key past `max_entries`."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._replies: OrderedDict[str, StoredReply] = OrderedDict()

    def __len__(self) -> int:
        return len(self._replies)

    async def get(self, key: str) -> StoredReply | None:
        reply = self._replies.get(key)
        if reply is not None:
            self._replies.move_to_end(key)
        return reply

    async def put(self, key: str, reply: StoredReply) -> None:
        self._replies[key] = reply
        self._replies.move_to_end(key)
        while len(self._replies) > self.max_entries:
            self._replies.popitem(last=False)
