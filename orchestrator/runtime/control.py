"""Operator requests: what the control queue accepts besides a start, and how one is sent.

The daemon applies an `abort`, `retry` or `resume` through the saga's actor and records it in
the saga's history with the operator's name; the CLI sends them.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from participants_sdk.saga_client import send_control_request

if TYPE_CHECKING:
    from orchestrator.ports import Broker

OperatorVerb = Literal["abort", "retry", "resume"]
CONTROL_VERBS: Final[tuple[str, ...]] = ("start", *get_args(OperatorVerb))


class OperatorCommand(BaseModel):
    """Body of an `abort`, `retry` or `resume` request."""

    model_config = ConfigDict(extra="forbid")
    saga_id: str = Field(min_length=1, max_length=200)
    operator: str = Field(min_length=1)
    compensate: bool = False
    reason: str | None = None


async def send_operator_request(
    broker: Broker,
    verb: OperatorVerb,
    saga_id: str,
    *,
    operator: str,
    compensate: bool = False,
    reason: str | None = None,
) -> str:
    """Send the request once; returns its request id (the message id)."""
    body = OperatorCommand(saga_id=saga_id, operator=operator, compensate=compensate, reason=reason)
    request_id = uuid.uuid4().hex
    await send_control_request(broker, verb, body.model_dump(mode="json"), request_id)
    return request_id
