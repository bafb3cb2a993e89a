"""Control requests: what the `sagawire.control` queue accepts, and a client that sends them.

    client = SagaClient(broker)
    saga_id = await client.start_saga("order", {"order_id": "o-1", ...}, saga_id="o-1")

Starting is idempotent on the saga id: sending the same start twice starts one saga.
"""

from __future__ import annotations

import uuid
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from participants_sdk import protocol
from participants_sdk.transport import Broker

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
    """Starts sagas and sends operator requests through the control queue."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def start_saga(
        self, machine: str, data: dict[str, Any], *, saga_id: str | None = None
    ) -> str:
        """Ask the orchestrator to start a saga; returns its id once the broker has the request."""
        request = StartRequest(machine=machine, saga_id=saga_id or uuid.uuid4().hex, data=data)
        # The message id derives from the saga id: a resent start is recognisably the same one.
        await self._send("start", request.model_dump(mode="json"), f"start:{request.saga_id}")
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
