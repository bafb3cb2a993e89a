"""AsyncAPI channels and messages over RabbitMQ, with the AMQP bindings (version 0.3.0).

A channel is a routing key on an exchange (`is: routingKey`): the binding cannot name the queue
as well, so the queue bound to it goes in the description and in `x-sagawire-queue`.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from orchestrator.asyncapi.schemas import Schema
from participants_sdk import protocol

BINDING_VERSION: Final = "0.3.0"
VHOST: Final = "/"
"""RabbitMQ's default virtual host; the one in the AMQP URL when it names another."""
CONTENT_ENCODING: Final = "identity"
"""Bodies are sent unencoded: Sagawire refuses any `content_encoding` but none or identity."""

ExchangeType = Literal["topic", "direct"]


def ref(*parts: str) -> dict[str, str]:
    """A `$ref` to `#/part/part/...`, each part escaped as a JSON pointer token."""
    tokens = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return {"$ref": "#/" + "/".join(tokens)}


def channel(
    *,
    address: str,
    exchange: str,
    exchange_type: ExchangeType,
    queue: str,
    description: str,
    messages: dict[str, dict[str, str]],
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    found: dict[str, Any] = {"address": address}
    if parameters:
        found["parameters"] = parameters
    found.update(
        {
            "description": description,
            "messages": messages,
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": exchange_type,
                        "durable": True,
                        "autoDelete": False,
                        "vhost": VHOST,
                    },
                    "bindingVersion": BINDING_VERSION,
                }
            },
            "x-sagawire-queue": queue,
        }
    )
    return found


def message(
    *,
    name: str,
    title: str,
    summary: str,
    description: str,
    payload: Schema,
    headers: Schema | None = None,
    message_type: str | None = None,
    correlation_id: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A message; `message_type` is its AMQP `type` property when it is fixed."""
    found: dict[str, Any] = {
        "name": name,
        "title": title,
        "summary": summary,
        "description": description,
        "contentType": protocol.CONTENT_TYPE_JSON,
    }
    if headers is not None:
        found["headers"] = headers
    found["payload"] = payload
    if correlation_id is not None:
        found["correlationId"] = correlation_id
    amqp: dict[str, str] = {"contentEncoding": CONTENT_ENCODING}
    if message_type is not None:
        amqp["messageType"] = message_type
    amqp["bindingVersion"] = BINDING_VERSION
    found["bindings"] = {"amqp": amqp}
    return found


PROPERTIES: Final = (
    "AMQP properties: `message_id` (unique), `correlation_id` (the saga id), `type` (the "
    "command or event name) and `content_type: application/json`."
)
"""What every message carries besides its headers; AsyncAPI has no place for the AMQP
`correlation_id` property (a `correlationId` location points into headers or payload only)."""
