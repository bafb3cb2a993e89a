"""`SagaClient`: a start whose publish was never confirmed is sent again, the same message."""

from __future__ import annotations

import pytest

from participants_sdk import MemoryBroker, SagaClient, protocol
from participants_sdk.errors import NotConfirmed

pytestmark = pytest.mark.asyncio


class LosesConfirms:
    """Publishes, then reports the publish unconfirmed `failures` times (the message went)."""

    def __init__(self, broker: MemoryBroker, failures: int) -> None:
        self._connection = broker.connect()
        self.failures = failures

    async def declare_topology(self, services):
        await self._connection.declare_topology(services)

    async def publish(self, exchange, routing_key, message):
        await self._connection.publish(exchange, routing_key, message)
        if self.failures:
            self.failures -= 1
            raise NotConfirmed("connection lost before the confirm")


async def test_an_unconfirmed_start_is_sent_again_with_the_same_message_id():
    broker = MemoryBroker()
    flaky = LosesConfirms(broker, failures=2)
    await flaky.declare_topology([])
    saga_id = await SagaClient(flaky).start_saga("order", {"order_id": "o-1"}, saga_id="o-1")
    assert saga_id == "o-1"
    sent = broker.messages(protocol.CONTROL_QUEUE)
    assert [m.message_id for m in sent] == ["start:o-1"] * 3  # one start, whatever arrives


async def test_a_start_never_confirmed_fails_after_its_attempts():
    broker = MemoryBroker()
    flaky = LosesConfirms(broker, failures=10)
    await flaky.declare_topology([])
    with pytest.raises(NotConfirmed):
        await SagaClient(flaky, start_attempts=2).start_saga("order", {}, saga_id="o-2")
    assert len(broker.messages(protocol.CONTROL_QUEUE)) == 2


async def test_start_attempts_must_be_positive():
    with pytest.raises(ValueError, match="start_attempts"):
        SagaClient(MemoryBroker().connect(), start_attempts=0)
