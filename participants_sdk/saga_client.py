"""Starting a saga: the body of a start request, and the client that sends it to the daemon.

    client = SagaClient(broker)
    saga_id = await client.start_saga("order", {"order_id": "o-1", ...}, saga_id="o-1")

Starting is idempotent on the saga id: sending the same start twice starts one saga. A W3C
`traceparent` given to `start_saga` goes with the request (by default, with OpenTelemetry, the
current span's); the saga's commands and their replies carry it on (see docs/tracing.md).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from participants_sdk import protocol
from participants_sdk.errors import NotConfirmed
from participants_sdk.headers import valid_traceparent
from participants_sdk.limits import check_storable
from participants_sdk.tracing import current_traceparent
from participants_sdk.transport import Broker

_log = structlog.get_logger(__name__)


class StartRequest(BaseModel):
    """Body of a `start` request."""

    model_config = ConfigDict(extra="forbid")
    machine: str = Field(min_length=1)
    saga_id: str = Field(min_length=1, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict)


class SagaClient:
    """Starts sagas through the control queue.

    A start the broker never confirmed because the connection went mid-publish is sent again,
    up to `start_attempts` times in all: the orchestrator starts one saga per id whatever
    arrives twice.
    """

    def __init__(self, broker: Broker, *, start_attempts: int = 5) -> None:
        if start_attempts < 1:
            raise ValueError(f"start_attempts must be at least 1, got {start_attempts}")
        self._broker = broker
        self.start_attempts = start_attempts

    async def start_saga(
        self,
        machine: str,
        data: dict[str, Any],
        *,
        saga_id: str | None = None,
        traceparent: str | None = None,
    ) -> str:
        """Ask the orchestrator to start a saga; returns its id once the broker has the request.

        Data the store cannot hold (see `participants_sdk.limits`) raises `UnstorableData` here,
        before anything is sent: the orchestrator would refuse it. A `traceparent` that is not
        a valid W3C one raises `ValueError`; without one, the current OpenTelemetry span's
        context goes (when OpenTelemetry is installed and a span is current).
        """
        check_storable(data, "start data")
        headers: dict[str, Any] = {}
        if traceparent is None:  # with OpenTelemetry: the caller's current span, if any
            traceparent = current_traceparent()
        if traceparent is not None:
            if valid_traceparent(traceparent) is None:
                raise ValueError(
                    f"traceparent {traceparent[:60]!r} is not a W3C traceparent "
                    "(00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>)"
                )
            headers[protocol.H_TRACEPARENT] = traceparent
        request = StartRequest(machine=machine, saga_id=saga_id or uuid.uuid4().hex, data=data)
        # The message id derives from the saga id: a resent start is recognisably the same one.
        body, message_id = request.model_dump(mode="json"), f"start:{request.saga_id}"
        for attempt in range(1, self.start_attempts + 1):
            try:
                await send_control_request(self._broker, "start", body, message_id, headers)
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


async def send_control_request(
    broker: Broker,
    verb: str,
    body: dict[str, Any],
    message_id: str,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish one request to the control queue; `body["saga_id"]` is its correlation id."""
    message = protocol.WireMessage.json(
        type=verb,
        payload=body,
        correlation_id=body["saga_id"],
        message_id=message_id,
        headers=headers,
    )
    await broker.publish(protocol.CONTROL_EXCHANGE, protocol.CONTROL_ROUTING_KEY, message)
