"""Sagawire participant SDK."""

from participants_sdk.control import OperatorCommand, SagaClient, StartRequest
from participants_sdk.dedupe import DedupeStore, MemoryDedupeStore, StoredReply
from participants_sdk.errors import (
    AccessRefused,
    AlreadySettledError,
    BrokerClosed,
    BrokerError,
    BrokerUnreachable,
    DuplicateHandlerError,
    HandlerSignatureError,
    NotConfirmed,
    ParticipantError,
    Reject,
    RetryLater,
    TopologyError,
    Unroutable,
)
from participants_sdk.gc_tuning import tune_gc
from participants_sdk.memory import MemoryBroker, MemoryConnection, MemoryDelivery
from participants_sdk.participant import CommandContext, Participant, event_name_of
from participants_sdk.protocol import BodyError, WireMessage
from participants_sdk.rabbitmq import RabbitBroker
from participants_sdk.transport import Broker, Delivery, DeliveryHandler, Subscription

__all__ = [
    "AccessRefused",
    "AlreadySettledError",
    "BodyError",
    "Broker",
    "BrokerClosed",
    "BrokerError",
    "BrokerUnreachable",
    "CommandContext",
    "DedupeStore",
    "Delivery",
    "DeliveryHandler",
    "DuplicateHandlerError",
    "HandlerSignatureError",
    "MemoryBroker",
    "MemoryConnection",
    "MemoryDedupeStore",
    "MemoryDelivery",
    "NotConfirmed",
    "OperatorCommand",
    "Participant",
    "ParticipantError",
    "RabbitBroker",
    "Reject",
    "RetryLater",
    "SagaClient",
    "StartRequest",
    "StoredReply",
    "Subscription",
    "TopologyError",
    "Unroutable",
    "WireMessage",
    "event_name_of",
    "tune_gc",
]
