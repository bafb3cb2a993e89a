"""The RabbitMQ broker adapter: the participant SDK's, so both sides speak the same wire."""

from __future__ import annotations

from participants_sdk.rabbitmq import (
    RETRY_BUCKETS_MS,
    QueueType,
    RabbitBroker,
    RabbitDelivery,
    RabbitSubscription,
)

__all__ = ["RETRY_BUCKETS_MS", "QueueType", "RabbitBroker", "RabbitDelivery", "RabbitSubscription"]
