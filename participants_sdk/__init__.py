"""Sagawire participant SDK: serve a service's commands, start sagas.

    payments = Participant("payment")

    @payments.command_handler("execute_payment")
    async def execute_payment(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted: ...

    broker = await RabbitBroker.connect("amqp://guest:guest@localhost:5672/")
    async with payments.serve(broker):
        ...

The exceptions (`participants_sdk.errors`) and the wire protocol (`participants_sdk.protocol`)
have modules of their own, as has `participants_sdk.mongo_dedupe.MongoDedupeStore` (replies
remembered across restarts; the `mongodb` extra). Each participant counts what became of its
commands in `Participant.stats`; `participants_sdk.prometheus.ParticipantCollector` exports the
counts to Prometheus (the `metrics` extra).
"""

from participants_sdk.dedupe import DedupeStore, MemoryDedupeStore, StoredReply
from participants_sdk.errors import BrokerError, ParticipantError, Reject, RetryLater
from participants_sdk.gc_tuning import tune_gc
from participants_sdk.handlers import CommandContext, reply_of
from participants_sdk.memory import MemoryBroker
from participants_sdk.participant import Participant
from participants_sdk.rabbitmq import RabbitBroker
from participants_sdk.saga_client import SagaClient
from participants_sdk.stats import ParticipantStats

__all__ = [
    "BrokerError",
    "CommandContext",
    "DedupeStore",
    "MemoryBroker",
    "MemoryDedupeStore",
    "Participant",
    "ParticipantError",
    "ParticipantStats",
    "RabbitBroker",
    "Reject",
    "RetryLater",
    "SagaClient",
    "StoredReply",
    "reply_of",
    "tune_gc",
]
