"""Control requests: what the `sagawire.control` queue accepts, and a client that sends them.

    client = SagaClient(broker)
    saga_id = await client.start_saga("order", {"order_id": "o-1", ...}, saga_id="o-1")

Starting is idempotent on the saga id: sending the same start twice starts one saga.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from participants_sdk import protocol
from participants_sdk.errors import NotConfirmed
from participants_sdk.limits import check_storable
from participants_sdk.transport import Broker

_log = structlog.get_logger(__name__)

CONTROL_VERBS: Final = ("start", "abort", "retry", "resume")
OperatorVerb = Literal["abort", "retry", "resume"]


class StartRequest(BaseModel):
    """Body of a `start` request."""

    model_config = ConfigDict(extra="forbid")
    machine: str = Field(min_length=1)
    saga_id: str = Field(min_length=1, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict)


class OperatorCommand(BaseModel):
    """Body of an `abort`, `retry` or `resume` request."""

    model_config = ConfigDict(extra="forbid")
    saga_id: str = Field(min_length=1, max_length=200)
    operator: str = Field(min_length=1)
    compensate: bool = False
    reason: str | None = None


class SagaClient:
    """Starts sagas and sends operator requests through the control queue.

    A start the broker never confirmed because the connection went mid-publish is sent again,
    up to `start_attempts` times in all: the orchestrator starts one saga per id whatever
    arrives twice. Operator requests are sent once.
    """

    def __init__(self, broker: Broker, *, start_attempts: int = 5) -> None:
        if start_attempts < 1:
            raise ValueError(f"start_attempts must be at least 1, got {start_attempts}")
        self._broker = broker
        self.start_attempts = start_attempts

    async def start_saga(
        self, machine: str, data: dict[str, Any], *, saga_id: str | None = None
    ) -> str:
        """Ask the orchestrator to start a saga; returns its id once the broker has the request.

        Data the store cannot hold (see `participants_sdk.limits`) raises `UnstorableData` here,
        before anything is sent: the orchestrator would refuse it.
        """
        check_storable(data, "start data")
        request = StartRequest(machine=machine, saga_id=saga_id or uuid.uuid4().hex, data=data)
        # The message id derives from the saga id: a resent start is recognisably the same one.
        body, message_id = request.model_dump(mode="json"), f"start:{request.saga_id}"
        for attempt in range(1, self.start_attempts + 1):
            try:
                await self._send("start", body, message_id)
            except NotConfirmed as exc:  # the connection went mid-publish: send it again
                if attempt == self.start_attempts:
                    raise
                _log.warning(
                    "saga start not confirmed; sending it again",
                    saga_id=request.saga_id,
                    attempt=attempt,
                    error=str(exc),
                )
                await asyncio.sleep(min(0.5 * attempt, 2.0))
            else:
                break
        return request.saga_id

    async def request(
        self,
        verb: OperatorVerb,
        saga_id: str,
        *,
        operator: str,
        compensate: bool = False,
        reason: str | None = None,
    ) -> str:
        """Send an operator request; returns its request id (the message id)."""
        body = OperatorCommand(
            saga_id=saga_id, operator=operator, compensate=compensate, reason=reason
        )
        request_id = uuid.uuid4().hex
        await self._send(verb, body.model_dump(mode="json"), request_id)
        return request_id

    async def _send(self, verb: str, body: dict[str, Any], message_id: str) -> None:
        message = protocol.WireMessage.json(
            type=verb, payload=body, correlation_id=body["saga_id"], message_id=message_id
        )
        await self._broker.publish(protocol.CONTROL_EXCHANGE, protocol.CONTROL_ROUTING_KEY, message)
