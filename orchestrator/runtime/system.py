"""The actor system: routes deliveries and timers to saga actors, from start to stop.

    async with ActorSystem(registry, store, broker) as system:
        await system.start_saga("order", {"order_id": "o-1", ...})

At start it declares the topology, consumes the reply queues of every service its machines use
and the control queue (`deliveries`), then publishes outboxes left unconfirmed by a crash and
fires what is due (`recovery`). Its actors get an `ActorContext`, not the system, and it holds
no more of them at a time than `max_live_actors` (`live_actors`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Self

import structlog

from orchestrator.core.definition import MachineDefinition
from orchestrator.core.machines import MachineRegistry
from orchestrator.core.messages import Decision, Disposition, Message, StartSaga, TimerFired
from orchestrator.core.pauses import MachinePause, MachinePaused
from orchestrator.core.saga import Saga
from orchestrator.errors import RuntimeStopped, StartRefused
from orchestrator.ports import Broker, Clock, SagaStore, Subscription
from orchestrator.runtime.actor import ActorContext, SagaActor, UnknownSaga
from orchestrator.runtime.clock import SystemClock
from orchestrator.runtime.deliveries import NOT_RETRIED_ERRORS, Deliveries
from orchestrator.runtime.live_actors import LiveActors
from orchestrator.runtime.recovery import SWEEP_SHARE, Recovery
from orchestrator.runtime.stats import RuntimeStats
from orchestrator.runtime.timers import Timers
from orchestrator.tracing import record_decision, trace_start
from participants_sdk import protocol
from participants_sdk.limits import check_storable
from participants_sdk.tracing import current_traceparent

__all__ = ["SWEEP_SHARE", "ActorSystem", "RuntimeSettings", "RuntimeStopped"]

log = structlog.get_logger("sagawire.runtime")

DecisionListener = Callable[[Decision, Saga], None]


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimeSettings:
    max_live_actors: int = 10_000
    """Live actors at most; past it, new sagas wait for an idle one to be passivated."""
    passivate_after: float = 60.0
    """Seconds an actor may sit idle before it is dropped from memory."""
    sweep_interval: float = 5.0
    """Seconds between looks in the store for due sagas this process has no timer for."""
    batch: int = 1_000
    """Sagas fetched per sweep or recovery query."""
    prefetch: int = 256
    """Unsettled deliveries per consumer."""
    transient_retry_cap: float = 5.0
    """Longest pause between tries when the store or broker fails while processing."""
    transient_give_up: float = 60.0
    """Seconds of failing tries after which a delivery is requeued."""
    pauses_read_every: float = 1.0
    """Seconds a start request may go by an old list of paused machines."""


class ActorSystem:
    def __init__(
        self,
        registry: MachineRegistry,
        store: SagaStore,
        broker: Broker,
        *,
        clock: Clock | None = None,
        settings: RuntimeSettings | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings or RuntimeSettings()
        self.listeners: list[DecisionListener] = []
        clock = clock or SystemClock()
        stats = RuntimeStats()
        self._actors = LiveActors(
            self._new_actor,
            clock,
            stats,
            most=self.settings.max_live_actors,
            passivate_after=self.settings.passivate_after,
        )
        self._context = ActorContext(
            store=store,
            broker=broker,
            clock=clock,
            stats=stats,
            timers=Timers(clock, self._fire_timer),
            definition=self.definition,
            decided=self.decided,
            actor_idle=self._actors.actor_idle,
        )
        self._deliveries = Deliveries(self._tell_patiently, stats, services=self.services())
        self._recovery = Recovery(
            store,
            clock,
            self._context.timers,
            stats,
            batch=self.settings.batch,
            sweep_interval=self.settings.sweep_interval,
            rehydrate=self._rehydrate,
            wake=self._fire_timer,
        )
        self._subscriptions: list[Subscription] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._closed = False
        self._ready = False
        self._started_at = self.clock.now()
        self._pauses: dict[str, MachinePause] = {}
        self._pauses_read_at: float | None = None

    # -- what the actors share: fixed for the runtime's life, so read-only -----------------

    @property
    def store(self) -> SagaStore:
        return self._context.store

    @property
    def broker(self) -> Broker:
        return self._context.broker

    @property
    def clock(self) -> Clock:
        return self._context.clock

    @property
    def stats(self) -> RuntimeStats:
        return self._context.stats

    @property
    def timers(self) -> Timers:
        return self._context.timers

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def services(self) -> list[str]:
        return sorted({service for d in self.registry for service in d.services()})

    async def start(self, *, consume: bool = True) -> None:
        """Declare the topology, consume (`ready` from then on), recover, and return.

        Replies and control requests are consumed before the recovery's queries run: on a
        database that scans for them (FerretDB has no secondary indexes) those take time in
        proportion to the sagas stored, and the sagas with messages waiting need none of it.
        An actor publishes its saga's leftover outbox itself when it first loads the saga, so
        the two cannot step on each other.
        """
        self._started_at = self.clock.now()
        await self.broker.declare_topology(self.services())
        self.timers.start()
        if consume:
            for service in self.services():
                self._subscriptions.append(
                    await self.broker.consume(
                        protocol.reply_queue(service),
                        self._deliveries.on_reply,
                        prefetch=self.settings.prefetch,
                    )
                )
            self._subscriptions.append(
                await self.broker.consume(
                    protocol.CONTROL_QUEUE,
                    self._deliveries.on_control,
                    prefetch=self.settings.prefetch,
                )
            )
        # Serving from here: readiness does not wait for the recovery's scans.
        self._ready = True
        await self.recover()
        self._loops = [
            asyncio.create_task(self._recovery.sweep_loop(), name="sagawire-sweeper"),
            asyncio.create_task(self._actors.passivation_loop(), name="sagawire-passivation"),
        ]
        log.info("runtime_started", services=self.services(), machines=len(self.registry))

    async def stop(self) -> None:
        """Stop consuming, let every actor finish what it holds, then stop the timers."""
        if self._closed:
            return
        self._closed = True
        for subscription in self._subscriptions:
            await subscription.cancel()
        self._subscriptions.clear()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.timers.stop()
        log.info("runtime_stopped", **self.stats.summary())

    async def kill(self) -> None:
        """Drop everything at once, as a crash would: nothing in flight is finished."""
        self._closed = True
        tasks = [*self._loops, *self._background, *self._actors.tasks()]
        for task in tasks:
            task.cancel()
        self._actors.abandon_all()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.timers.stop()
        self._subscriptions.clear()
        self._actors.clear()

    def busy(self) -> list[asyncio.Task[Any]]:
        """Tasks with work in hand: actors draining a mailbox and timer wake-ups."""
        return [*self._background, *self._actors.tasks()]

    # -- telling actors -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Started, consuming, and not stopping."""
        return self._ready and not self._closed

    @property
    def live_actors(self) -> int:
        return len(self._actors)

    def definition(self, name: str, version: int | None) -> MachineDefinition:
        return self.registry.latest(name) if version is None else self.registry.get(name, version)

    async def tell(self, saga_id: str, message: Message | None) -> Decision | None:
        """Run one message through the saga's actor; returns once stored and published.

        `MachinePaused` for a start of a machine an operator paused.
        """
        if self._closed:
            raise RuntimeStopped("the runtime is stopped")
        if isinstance(message, StartSaga):
            pause = (await self._paused_machines()).get(message.machine)
            if pause is not None:
                raise MachinePaused(pause)
            message = trace_start(message)  # a trace of its own, when traced and it has none
        actor = await self._actors.actor(saga_id)
        return await actor.tell(message)

    async def _paused_machines(self) -> dict[str, MachinePause]:
        """The paused machines, read from the store at most once per `pauses_read_every`."""
        now = asyncio.get_running_loop().time()
        every = self.settings.pauses_read_every
        if self._pauses_read_at is None or now - self._pauses_read_at >= every:
            self._pauses = await self.store.paused_machines()
            self._pauses_read_at = now
        return self._pauses

    async def start_saga(
        self, machine: str, data: dict[str, Any], *, saga_id: str | None = None
    ) -> Decision:
        """Start a saga in this process (the control queue does the same for other processes);
        with OpenTelemetry, in the trace of the caller's current span."""
        saga_id = saga_id or uuid.uuid4().hex
        self.definition(machine, None)  # unknown machine: fail before creating an actor
        check_storable(data, "start data")  # UnstorableData, a ValueError
        start = StartSaga(saga_id, machine, data, traceparent=current_traceparent())
        decision = await self.tell(saga_id, start)
        if decision is None:  # pragma: no cover - only None messages give None
            raise RuntimeError("start gave no decision")
        if decision.disposition is Disposition.REFUSED:
            raise StartRefused(decision.reason or f"start of saga {saga_id!r} refused")
        return decision

    def _new_actor(self, saga_id: str) -> SagaActor:
        return SagaActor(saga_id, self._context)

    def decided(
        self, message: Message, before: Saga | None, decision: Decision, stored: Saga
    ) -> None:
        """Called by an actor once a decision is stored and its commands confirmed."""
        self.stats.count_decision(message, before, decision)
        record_decision(message, before, decision)
        for listener in self.listeners:
            try:
                listener(decision, stored)
            except Exception:
                log.exception("listener_failed", saga_id=stored.saga_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- timers, recovery and sweeps (`recovery`), passivation (`live_actors`) ------------

    def _fire_timer(self, saga_id: str) -> None:
        if not self._closed:
            self._spawn(self._wake(saga_id))

    async def _wake(self, saga_id: str) -> None:
        self.stats.timer_fires += 1
        try:
            await self._tell_patiently(saga_id, TimerFired())
        except UnknownSaga:
            pass
        except Exception:
            log.exception("timer_failed", saga_id=saga_id)

    async def sweep(self) -> int:
        """Wake due sagas this process holds no timer for (after a restart, or other replicas')."""
        return await self._recovery.sweep()

    async def recover(self) -> int:
        """Publish every outbox a crash left unconfirmed before the start, then wake what is due."""
        return await self._recovery.recover(saved_until=self._started_at)

    async def _rehydrate(self, saga_id: str) -> None:
        await self.tell(saga_id, None)

    def passivate_idle(self) -> int:
        """Drop the actors idle for `passivate_after` seconds from memory; returns how many."""
        return self._actors.passivate_idle()

    # -- deliveries (settled in `deliveries`) ---------------------------------------------

    async def _tell_patiently(self, saga_id: str, message: Message) -> Decision | None:
        """Tell, trying again with growing pauses while the store or broker fails."""
        pause, waited = 0.05, 0.0
        while True:
            try:
                return await self.tell(saga_id, message)
            except NOT_RETRIED_ERRORS:
                raise
            except Exception as exc:
                if waited >= self.settings.transient_give_up or self._closed:
                    raise
                self.stats.transient_failures += 1
                log.warning(
                    "processing_failed_retrying", saga_id=saga_id, error=str(exc), pause=pause
                )
                await self.clock.sleep(pause)
                waited += pause
                pause = min(pause * 2, self.settings.transient_retry_cap)
