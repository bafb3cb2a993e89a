"""A saga started with a W3C `traceparent` sends it on every command, its compensations
included, also after the daemon rebuilt it from the store. On both backends (see conftest)."""

from __future__ import annotations

import pytest
from runtime_support import order

from orchestrator.core.saga import SagaStatus
from orchestrator.testing import SagaHarness, ScriptedService
from participants_sdk import SagaClient, protocol

pytestmark = pytest.mark.asyncio

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_every_command_of_a_saga_carries_the_traceparent_it_was_started_with(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    client = SagaClient(await harness.connect())
    await client.start_saga("order", order("o-t"), saga_id="o-t", traceparent=TRACEPARENT)
    payment = await manual["payment"].next_command()
    assert payment.headers[protocol.H_TRACEPARENT] == TRACEPARENT
    assert (await harness.saga("o-t")).traceparent == TRACEPARENT

    await harness.crash()  # the rest comes from the saga as stored
    await harness.rebuild()
    await manual["payment"].reply(payment, "payment_executed", {"payment_id": "p-t"})
    stock = await manual["stock"].next_command()
    assert stock.headers[protocol.H_TRACEPARENT] == TRACEPARENT

    await manual["stock"].reply(stock, "out_of_stock", {"sku": "A-1"}, rejected=True)
    refund = await manual["payment"].next_command()
    assert refund.type == "refund_payment"
    assert refund.headers[protocol.H_TRACEPARENT] == TRACEPARENT
    await manual["payment"].reply(refund, "payment_refunded", {"order_id": "o-t"})
    await harness.drain()
    assert (await harness.saga("o-t")).status is SagaStatus.COMPENSATED


async def test_a_saga_started_without_one_sends_none(
    harness: SagaHarness, manual: dict[str, ScriptedService]
) -> None:
    await harness.start("order", order("o-n"), "o-n")
    payment = await manual["payment"].next_command()
    assert protocol.H_TRACEPARENT not in payment.headers
    assert (await harness.saga("o-n")).traceparent is None
