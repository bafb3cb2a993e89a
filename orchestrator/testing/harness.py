"""A harness for testing sagas in-process: a manual clock, crash & rebuild, any backend.

    async with SagaHarness(registry) as h:
        await h.system.start_saga("order", data, saga_id="o-1")
        await h.drain()
        assert (await h.saga("o-1")).status is SagaStatus.SUCCEEDED

By default it runs on the memory broker and store; `backend=RabbitMongoBackend(amqp, mongodb)`
runs the same test on a real RabbitMQ and MongoDB (see `orchestrator.testing.backends`).
Services are attached with `h.serve(participant)`; `h.crash()` throws the runtime away as a
crash would (unsettled deliveries go back to their queues) and `h.rebuild()` starts a new one on
the same store and broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Self

from orchestrator.core.machines import MachineRegistry
from orchestrator.core.saga import Saga
from orchestrator.ports import Broker, Delivery, SagaStore
from orchestrator.runtime.clock import ManualClock
from orchestrator.runtime.system import ActorSystem, RuntimeSettings
from orchestrator.testing.backends import HarnessBackend, MemoryBackend
from participants_sdk import Participant, protocol

__all__ = ["SagaHarness", "ScriptedService", "drain"]


async def drain(
    systems: Iterable[ActorSystem],
    backend: HarnessBackend,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - a bounded wait whose error says what is still busy
) -> None:
    """Wait until the broker is idle and no actor or timer task of the systems has work."""
    systems = list(systems)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    quiet = 0
    while quiet < 3:
        await backend.wait_idle(max(deadline - loop.time(), 0.0))
        busy = [task for system in systems for task in system.busy()]
        if not busy:
            quiet += 1
            await asyncio.sleep(0)
            continue
        quiet = 0
        _, pending = await asyncio.wait(busy, timeout=max(deadline - loop.time(), 0.0))
        if pending:
            names = ", ".join(sorted(task.get_name() for task in pending))
            raise TimeoutError(f"runtime still busy after {timeout}s: {names}")


class SagaHarness:
    def __init__(
        self,
        registry: MachineRegistry,
        *,
        settings: RuntimeSettings | None = None,
        clock: ManualClock | None = None,
        backend: HarnessBackend | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings or RuntimeSettings(sweep_interval=1.0, passivate_after=30.0)
        self.clock = clock or ManualClock()
        self.backend = backend or MemoryBackend()
        self._connection: Broker | None = None
        self._system: ActorSystem | None = None
        self._services = contextlib.AsyncExitStack()

    @property
    def system(self) -> ActorSystem:
        if self._system is None:
            raise RuntimeError("the harness is not started")
        return self._system

    @property
    def store(self) -> SagaStore:
        """The backend's saga store."""
        return self.backend.store

    async def __aenter__(self) -> Self:
        services = {service for machine in self.registry for service in machine.services()}
        await self.backend.start(sorted(services))
        await self._services.__aenter__()
        await self.rebuild()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._system is not None:
                await self._system.stop()
            if self._connection is not None:
                await self._connection.close()
            await self._services.aclose()
        finally:
            await self.backend.close()

    async def connect(self) -> Broker:
        """A new connection to the harness's broker, as another process would open."""
        return await self.backend.connect()

    async def serve(self, participant: Participant) -> None:
        """Run a participant against the harness's broker until the harness closes."""
        connection = await self.connect()
        self._services.push_async_callback(connection.close)
        await self._services.enter_async_context(participant.serve(connection))

    async def rebuild(self) -> ActorSystem:
        """Start a new runtime on the same store and broker, as a restarted daemon would."""
        self._connection = await self.connect()
        self._system = ActorSystem(
            self.registry,
            self.backend.store,
            self._connection,
            clock=self.clock,
            settings=self.settings,
        )
        await self._system.start()
        return self._system

    async def crash(self) -> None:
        """Throw the runtime away mid-flight: nothing is finished, unsettled deliveries return."""
        # The connection goes first, as when a process dies: nothing it held is settled later.
        if self._connection is not None:
            await self.backend.abort(self._connection)
        if self._system is not None:
            await self._system.kill()
        self._system = None
        self._connection = None

    async def drain(self, timeout: float = 10.0, *, also: Iterable[ActorSystem] = ()) -> None:  # noqa: ASYNC109 - see drain()
        """Wait until the harness's runtime (and the systems in `also`) and the broker are idle."""
        await drain([self.system, *also], self.backend, timeout=timeout)

    async def advance(self, seconds: float) -> None:
        """Move the clock and let whatever became due run to the end."""
        await self.clock.advance(seconds)
        await self.drain()

    async def saga(self, saga_id: str) -> Saga:
        saga = await self.backend.store.load(saga_id)
        if saga is None:
            raise LookupError(f"no saga {saga_id!r} in the store")
        return saga

    async def sagas(self) -> list[Saga]:
        """Every saga in the store."""
        return await self.backend.sagas()

    async def start(self, machine: str, data: dict[str, Any], saga_id: str) -> Saga:
        await self.system.start_saga(machine, data, saga_id=saga_id)
        return await self.saga(saga_id)


class ScriptedService:
    """Plays a participant by hand: the test takes each command and decides the reply."""

    def __init__(self, connect: Callable[[], Awaitable[Broker]], service: str) -> None:
        """`connect`: opens its connection, e.g. `SagaHarness.connect`."""
        self._connect = connect
        self.service = service
        self.inbox: asyncio.Queue[protocol.WireMessage] = asyncio.Queue()
        self.seen_keys: list[str] = []
        self.connection: Broker | None = None

    async def start(self) -> None:
        self.connection = await self._connect()
        await self.connection.declare_topology([self.service])
        await self.connection.consume(protocol.command_queue(self.service), self._take)

    async def _take(self, delivery: Delivery) -> None:
        # Taken off the queue at once, so that drain() sees an idle broker while the test
        # holds the command.
        self.seen_keys.append(str(delivery.message.headers[protocol.H_IDEMPOTENCY_KEY]))
        await delivery.ack()
        await self.inbox.put(delivery.message)

    async def next_command(self, timeout: float = 5.0) -> protocol.WireMessage:  # noqa: ASYNC109 - fails a test that waits in vain
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def reply(
        self,
        command: protocol.WireMessage,
        event: str,
        payload: dict[str, Any] | None = None,
        *,
        rejected: bool = False,
    ) -> None:
        headers: dict[str, Any] = {
            name: command.headers[name] for name in protocol.REPLY_COPIES if name in command.headers
        }
        headers[protocol.H_SERVICE] = self.service
        if rejected:
            headers[protocol.H_REJECTED] = True
        reply = protocol.WireMessage.json(
            type=event,
            payload=payload or {},
            correlation_id=command.correlation_id,
            headers=headers,
        )
        if self.connection is None:
            raise RuntimeError("start() the service first")
        await self.connection.publish(protocol.REPLIES_EXCHANGE, self.service, reply)
