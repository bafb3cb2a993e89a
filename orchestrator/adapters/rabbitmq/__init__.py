"""The daemon's side of RabbitMQ.

The connection is the participant SDK's `RabbitBroker`, so that both sides of the wire encode,
declare and settle messages the same way. What only the daemon and its operators do lives here:
`dead_letters` reads, replays and purges the DLQs, `permissions` says what each RabbitMQ user
needs.
"""

from __future__ import annotations

from participants_sdk.rabbitmq import RETRY_BUCKETS_MS, QueueType, RabbitBroker

__all__ = ["RETRY_BUCKETS_MS", "QueueType", "RabbitBroker"]
