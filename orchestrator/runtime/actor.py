"""One saga's actor: a mailbox drained by one task at a time, so a saga's messages run in order.

Processing a message: load the saga on first use (rehydration) and publish any outbox left from
before; `decide()`; store the new state and its outbox with a version check (on conflict: reload
and decide again); publish the outbox and wait for the broker's confirms; only then resolve the
sender's future, which is when the broker delivery gets acked.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import TYPE_CHECKING

import structlog

from orchestrator.core.confirm import count_from_confirm
from orchestrator.core.decide import decide
from orchestrator.core.messages import Decision, Message, StartSaga
from orchestrator.errors import SagaExists, SagawireError, StoreError, VersionConflict
from orchestrator.runtime.codec import command_message
from orchestrator.tracing import command_traceparent

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.core.definition import MachineDefinition
    from orchestrator.core.saga import Saga
    from orchestrator.ports import Broker, Clock, SagaStore
    from orchestrator.runtime.stats import RuntimeStats
    from orchestrator.runtime.timers import Timers

log = structlog.get_logger("sagawire.actor")

MAX_CONFLICT_RETRIES = 20


class UnknownSaga(SagawireError):
    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"no saga with id {saga_id!r}")


class ConflictStorm(SagawireError):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class ActorContext:
    """What an actor needs of the runtime around it; the actor system builds one for all."""

    store: SagaStore
    broker: Broker
    clock: Clock
    stats: RuntimeStats
    timers: Timers
    definition: Callable[[str, int | None], MachineDefinition]
    """A machine's definition by name and version; None for the latest."""
    decided: Callable[[Message, Saga | None, Decision, Saga], None]
    """Told once a decision is stored and its commands confirmed."""
    actor_idle: Callable[[SagaActor], None]
    """Told when an actor's mailbox ran dry."""


_Work = tuple[Message | None, asyncio.Future[Decision | None]]


class SagaActor:
    def __init__(self, saga_id: str, context: ActorContext) -> None:
        self.saga_id = saga_id
        self._context = context
        self._saga: Saga | None = None
        self._loaded = False
        self._mailbox: collections.deque[_Work] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self.last_active = context.clock.now()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def idle(self) -> bool:
        return not self._mailbox and self._task is None

    @property
    def finished(self) -> bool:
        return self._saga is not None and self._saga.status.finished

    def tell(self, message: Message | None) -> asyncio.Future[Decision | None]:
        """Queue a message (None: just rehydrate and flush the outbox); the future settles
        once it is stored and its commands are confirmed."""
        future: asyncio.Future[Decision | None] = asyncio.get_running_loop().create_future()
        self._mailbox.append((message, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"saga-{self.saga_id}")
        return future

    def abandon(self) -> None:
        """Cancel whatever waits in the mailbox (the runtime is being killed)."""
        for _, future in self._mailbox:
            future.cancel()
        self._mailbox.clear()

    async def _drain(self) -> None:
        future: asyncio.Future[Decision | None] | None = None
        try:
            while self._mailbox:
                message, future = self._mailbox.popleft()
                if future.cancelled():
                    continue
                try:
                    result = await self._process(message)
                except Exception as exc:  # noqa: BLE001 - handed to the sender, who settles the delivery
                    # The cached state may be ahead of or behind the store now: reload next time.
                    self._loaded = False
                    if not future.done():
                        future.set_exception(exc)
                else:
                    if not future.done():
                        future.set_result(result)
                self.last_active = self._context.clock.now()
        except asyncio.CancelledError:
            # Killed: nobody waits in vain, and nothing is acked that was not finished.
            for _, waiting in [*([(None, future)] if future else []), *self._mailbox]:
                if waiting is not None:
                    waiting.cancel()
            self._mailbox.clear()
            raise
        finally:
            self._task = None
            self._context.actor_idle(self)

    async def _load(self) -> None:
        self._saga = await self._context.store.load(self.saga_id)
        self._loaded = True
        if self._saga is not None and self._saga.outbox:
            self._saga = await self._flush(self._saga)
        if self._saga is not None:
            self._context.timers.set(self.saga_id, self._saga.deadline)

    async def _process(self, message: Message | None) -> Decision | None:
        # A start is nearly always of a new saga: it is inserted without a load first, and
        # loaded only when the insert finds the id taken (a duplicate, or another start).
        assume_new = isinstance(message, StartSaga) and not self._loaded
        for _ in range(MAX_CONFLICT_RETRIES):
            fresh = not self._loaded
            if fresh and assume_new:
                self._saga, self._loaded = None, True
            elif fresh:
                await self._load()
            if message is None:
                return None
            saga = self._saga
            decision = decide(
                self._definition(saga, message), saga, message, self._context.clock.now()
            )
            if not decision.changed:
                if not fresh:
                    # Another replica may have moved the saga on since it was cached: a message
                    # is only called stale or duplicate against the stored state.
                    self._loaded = False
                    continue
                self._context.stats.decisions[decision.disposition.value] += 1
                return decision
            try:
                stored = await self._store(saga, decision.saga)
            except (VersionConflict, SagaExists) as exc:
                if not assume_new:
                    self._context.stats.conflicts += 1
                    log.debug("version_conflict", saga_id=self.saga_id, error=str(exc))
                assume_new = False
                self._loaded = False
                continue
            self._saga = stored
            self._saga = await self._flush(stored)
            self._context.timers.set(self.saga_id, self._saga.deadline)
            self._context.decided(message, saga, decision, stored)
            return decision
        raise ConflictStorm(
            f"saga {self.saga_id!r}: {MAX_CONFLICT_RETRIES} version conflicts in a row"
        )

    def _definition(self, saga: Saga | None, message: Message) -> MachineDefinition:
        if saga is not None:
            return self._context.definition(saga.machine, saga.machine_version)
        if isinstance(message, StartSaga):
            return self._context.definition(message.machine, None)
        raise UnknownSaga(self.saga_id)

    async def _store(self, before: Saga | None, after: Saga) -> Saga:
        if before is None:
            return await self._context.store.insert(after)
        return await self._context.store.save(after)

    async def _flush(self, saga: Saga) -> Saga:
        """Publish the outbox, all confirms awaited together, then mark it published.

        Returns the saga as it now stands: saved again when a confirm came so late that the
        deadlines of its steps had to be moved to count from it (`core.confirm`).
        """
        if not saga.outbox:
            return saga
        broker, stats = self._context.broker, self._context.stats
        messages = [
            command_message(command, traceparent=command_traceparent(saga, command))
            for command in saga.outbox
        ]
        stats.publishing += len(messages)
        try:
            if len(messages) == 1:  # the usual case: no task for gather to wrap it in
                await broker.publish(messages[0].exchange, messages[0].routing_key, messages[0])
            else:
                await asyncio.gather(
                    *(broker.publish(m.exchange, m.routing_key, m) for m in messages)
                )
        finally:
            stats.publishing -= len(messages)
        stats.count_published(saga.outbox)
        definition = self._context.definition(saga.machine, saga.machine_version)
        confirmed = {m.message_id for m in messages}
        moved = count_from_confirm(definition, saga, confirmed, self._context.clock.now())
        if moved is not None:
            return await self._save_moved(saga, moved)
        await self._context.store.mark_published(saga.saga_id, saga.version)
        saga.outbox = []
        return saga

    async def _save_moved(self, saga: Saga, moved: Saga) -> Saga:
        """Store deadlines moved to count from a late confirm, with the outbox published."""
        moved.outbox = []
        try:
            stored = await self._context.store.save(moved)
        except VersionConflict:  # saved by another replica meanwhile: it decides from here
            self._loaded = False
            return saga
        except StoreError as exc:
            # The commands are out; their deadlines stay counted from the save, and the outbox
            # is published again on recovery (participants dedupe it).
            log.warning("moved_deadlines_not_saved", saga_id=saga.saga_id, error=str(exc))
            self._loaded = False
            return saga
        self._context.stats.deadlines_moved += 1
        log.info("deadlines_moved_to_confirm", saga_id=saga.saga_id, deadline=str(stored.deadline))
        return stored
