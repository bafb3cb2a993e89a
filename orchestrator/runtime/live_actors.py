"""The actors a runtime holds in memory, bounded: an idle one is passivated (dropped, and
rehydrated from the store when next needed), and past `max_live_actors` a saga waits for a slot.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from orchestrator.ports import Clock
from orchestrator.runtime.actor import SagaActor
from orchestrator.runtime.stats import RuntimeStats


class LiveActors:
    def __init__(
        self,
        new_actor: Callable[[str], SagaActor],
        clock: Clock,
        stats: RuntimeStats,
        *,
        most: int,
        passivate_after: float,
    ) -> None:
        self._new_actor = new_actor
        self._clock = clock
        self._stats = stats
        self._most = most
        self._passivate_after = passivate_after
        self._actors: collections.OrderedDict[str, SagaActor] = collections.OrderedDict()
        self._slot_freed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._actors)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The tasks of actors draining a mailbox."""
        return [a.task for a in self._actors.values() if a.task is not None]

    def abandon_all(self) -> None:
        """Cancel what waits in every mailbox (the runtime is being killed)."""
        for actor in self._actors.values():
            actor.abandon()  # a task cancelled before it ran never sees its CancelledError

    def clear(self) -> None:
        self._actors.clear()

    async def actor(self, saga_id: str) -> SagaActor:
        """The saga's actor, made when it has none; waits while every slot holds a busy one."""
        while True:
            actor = self._actors.get(saga_id)
            if actor is not None:
                self._actors.move_to_end(saga_id)
                return actor
            if len(self._actors) < self._most or self._evict_idle():
                actor = self._new_actor(saga_id)
                self._actors[saga_id] = actor
                return actor
            # Every live actor is busy: hold this delivery (and so the consumer) until one is free.
            self._stats.backpressure_waits += 1
            self._slot_freed.clear()
            await self._slot_freed.wait()

    def _evict_idle(self) -> bool:
        for saga_id, actor in self._actors.items():
            if actor.idle:
                del self._actors[saga_id]
                self._stats.passivated += 1
                return True
        return False

    def actor_idle(self, actor: SagaActor) -> None:
        """Called by an actor whose mailbox ran dry."""
        if actor.finished and self._actors.get(actor.saga_id) is actor:
            # A finished saga only ever sees late duplicates: no reason to keep it in memory.
            del self._actors[actor.saga_id]
        self._slot_freed.set()

    def passivate_idle(self) -> int:
        """Drop the actors idle for `passivate_after` seconds; returns how many."""
        now = self._clock.now()
        stale = [
            saga_id
            for saga_id, actor in self._actors.items()
            if actor.idle and (now - actor.last_active).total_seconds() >= self._passivate_after
        ]
        for saga_id in stale:
            del self._actors[saga_id]
        self._stats.passivated += len(stale)
        if stale:
            self._slot_freed.set()
        return len(stale)

    async def passivation_loop(self) -> None:
        interval = max(self._passivate_after / 2, 0.01)
        while True:
            await self._clock.sleep(interval)
            self.passivate_idle()
