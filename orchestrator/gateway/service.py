"""What the gateway does, without HTTP: start sagas, read them, ask the daemon to act on them.

The same paths as the CLI: requests go to the daemon through the control queue (the daemon
applies them through the saga's actor and records them in its history); the verdict is read
back from MongoDB, or from the control DLQ when the daemon refused (`orchestrator.verdicts`).
Each failure is an `ApiProblem` with the HTTP status that fits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from aio_pika.abc import AbstractConnection

from orchestrator.adapters.mongo import MongoSagaStore, SagaFilter, SagaPage
from orchestrator.adapters.rabbitmq import dead_letters
from orchestrator.adapters.rabbitmq.control import control_broker
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.pauses import MachinePause
from orchestrator.core.saga import Saga, start_digest
from orchestrator.runtime.control import OperatorVerb, send_operator_request
from orchestrator.settings import Settings
from orchestrator.verdicts import Refused, await_verdict
from participants_sdk import amqp, protocol
from participants_sdk.headers import valid_traceparent
from participants_sdk.limits import UnstorableData, check_storable
from participants_sdk.rabbitmq import RabbitBroker
from participants_sdk.saga_client import SagaClient

DEFINITIONS_TTL: Final = 5.0
"""Seconds the machine definitions read from MongoDB are reused."""


class ApiProblem(Exception):
    """A request the gateway cannot carry out: `status` is the HTTP status, the message why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Started:
    saga_id: str
    existed: bool
    """The saga was there already, started with the same machine and data: nothing was sent."""


@dataclasses.dataclass(frozen=True)
class MachineView:
    name: str
    versions: list[MachineDefinition]
    counts: dict[str, int]
    pause: MachinePause | None

    @property
    def latest(self) -> MachineDefinition:
        return self.versions[-1]


class SagaService:
    """The gateway's connections: the store, a broker to publish control requests on, and a
    plain connection to read the control DLQ's verdicts."""

    def __init__(
        self, store: MongoSagaStore, broker: RabbitBroker, connection: AbstractConnection
    ) -> None:
        self.store = store
        self._broker = broker
        self._connection = connection
        self._definitions: list[MachineDefinition] = []
        self._definitions_read = -DEFINITIONS_TTL
        self._lock = asyncio.Lock()

    @classmethod
    @contextlib.asynccontextmanager
    async def connected(cls, settings: Settings) -> AsyncIterator[SagaService]:
        async with contextlib.AsyncExitStack() as opened:  # closed in reverse order
            store = await MongoSagaStore.connect(settings.mongodb_url)
            opened.push_async_callback(store.close)
            broker = await opened.enter_async_context(
                control_broker(
                    settings.amqp_url,
                    queue_type=settings.queue_type,
                    delivery_limit=settings.delivery_limit,
                    name="sagawire-gateway",
                )
            )
            connection = await dead_letters.connect(settings.amqp_url)
            opened.push_async_callback(connection.close)
            yield cls(store, broker, connection)

    # -- machines ----------------------------------------------------------------------------

    async def definitions(self) -> list[MachineDefinition]:
        """Every machine version the daemon stored, read again every few seconds."""
        async with self._lock:
            if time.monotonic() - self._definitions_read >= DEFINITIONS_TTL:
                self._definitions = await self.store.stored_definitions()
                self._definitions_read = time.monotonic()
            return self._definitions

    async def machines(self) -> list[MachineView]:
        definitions = await self.definitions()
        counts = await self.store.queries.counts_by_machine()
        pauses = await self.store.paused_machines()
        names = sorted({d.machine for d in definitions})
        return [
            MachineView(
                name=name,
                versions=[d for d in definitions if d.machine == name],
                counts=counts.get(name, {}),
                pause=pauses.get(name),
            )
            for name in names
        ]

    async def machine(self, name: str) -> MachineView:
        for view in await self.machines():
            if view.name == name:
                return view
        raise await self._unknown(name)

    async def _unknown(self, name: str) -> ApiProblem:
        known = ", ".join(sorted({d.machine for d in await self.definitions()})) or "none"
        return ApiProblem(404, f"no machine {name!r}; the daemon has stored: {known}")

    async def pause(self, name: str, *, by: str, reason: str | None) -> MachineView:
        await self.machine(name)
        await self.store.pause_machine(name, by=by, reason=reason)
        return await self.machine(name)

    async def resume(self, name: str) -> MachineView:
        await self.machine(name)
        if not await self.store.resume_machine(name):
            raise ApiProblem(409, f"machine {name!r} is not paused")
        return await self.machine(name)

    # -- sagas -------------------------------------------------------------------------------

    async def start(
        self,
        machine: str,
        data: dict[str, Any],
        *,
        saga_id: str,
        traceparent: str | None = None,
        wait: float = 0.0,
    ) -> Started:
        """Send a start request; 404 unknown machine, 409 paused or other data, 422 bad data.

        Reads only the cached definitions, the pauses and the one saga: no counts, which on a
        large store cost a pass over every saga.
        """
        if not any(d.machine == machine for d in await self.definitions()):
            raise await self._unknown(machine)
        pause = (await self.store.paused_machines()).get(machine)
        if pause is not None:
            why = f": {pause.reason}" if pause.reason else ""
            raise ApiProblem(409, f"machine {machine!r} is paused by {pause.by}{why}")
        try:
            check_storable(data, "data")
        except UnstorableData as exc:
            raise ApiProblem(422, str(exc)) from None
        existing = await self.store.load(saga_id)
        if existing is not None:
            self._check_same_start(existing, machine, data)
            return Started(saga_id, existed=True)
        await SagaClient(self._broker).start_saga(
            machine, data, saga_id=saga_id, traceparent=valid_traceparent(traceparent)
        )
        if wait > 0:
            await self._verdict(
                saga_id,
                f"start:{saga_id}",
                lambda saga: self._check_same_start(saga, machine, data),
                wait,
            )
        return Started(saga_id, existed=False)

    @staticmethod
    def _check_same_start(saga: Saga, machine: str, data: dict[str, Any]) -> bool:
        if saga.machine != machine or saga.start_digest not in (None, start_digest(machine, data)):
            other = "data" if saga.machine == machine else "machine"
            raise ApiProblem(
                409,
                f"saga {saga.saga_id!r} exists with other {other} (started as {saga.machine} "
                f"v{saga.machine_version} on {saga.created_at.isoformat()}); "
                "start a new saga under a new id",
            )
        return True

    async def saga(self, saga_id: str) -> Saga:
        saga = await self.store.load(saga_id)
        if saga is None:
            raise ApiProblem(404, f"no saga {saga_id!r}")
        return saga

    async def sagas(self, where: SagaFilter, *, limit: int, page: int) -> SagaPage:
        return await self.store.queries.find_sagas(where, limit=limit, skip=(page - 1) * limit)

    async def operate(
        self,
        verb: OperatorVerb,
        saga_id: str,
        *,
        operator: str,
        reason: str | None,
        compensate: bool = False,
        wait: float = 15.0,
    ) -> Saga:
        """Send `verb` and wait for the daemon's verdict: the saga as it applied it."""
        await self.saga(saga_id)
        if await self._control_consumers() == 0:
            raise ApiProblem(
                503,
                f"no daemon is running: nothing consumes {protocol.CONTROL_QUEUE}; "
                "start one with `sagawire run`",
            )
        request_id = await send_operator_request(
            self._broker, verb, saga_id, operator=operator, compensate=compensate, reason=reason
        )
        return await self._verdict(
            saga_id, request_id, lambda saga: request_id in saga.recent_requests, wait
        )

    async def _verdict(self, saga_id: str, request_id: str, applied: Any, wait: float) -> Saga:  # noqa: ANN401
        try:
            return await await_verdict(
                self.store, self._connection, saga_id, request_id, applied=applied, wait=wait
            )
        except Refused as refused:
            raise ApiProblem(409, f"refused: {str(refused).removeprefix('refused: ')}") from None
        except TimeoutError:
            raise ApiProblem(
                504,
                f"sent (request {request_id}) but not applied within {wait:g}s: is the daemon "
                "busy or stopping?",
            ) from None

    # -- dead letters ------------------------------------------------------------------------

    async def dead_letter_depths(self, queues: list[str]) -> dict[str, int | None]:
        """Messages ready in each queue; None for a queue not declared. 503 without a broker."""
        depths: dict[str, int | None] = {}
        try:
            for queue in queues:
                try:
                    depths[queue] = await dead_letters.depth(self._connection, queue)
                except dead_letters.QueueMissing:
                    depths[queue] = None
        except amqp.AMQP_ERRORS as exc:
            raise ApiProblem(503, f"cannot read the dead-letter queues: {exc}") from None
        return depths

    async def _control_consumers(self) -> int:
        try:
            return (await dead_letters.counts(self._connection, protocol.CONTROL_QUEUE))[1]
        except dead_letters.QueueMissing:
            return 0
