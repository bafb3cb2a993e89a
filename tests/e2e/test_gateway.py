"""The HTTP gateway over the real broker and store: `sagawire gateway` beside a daemon and the
participant services, each a process of its own.

Sagas are started through the API, read back, and operated on: the delivery service's handler
is broken, so both sagas wait in `deliver_order` on a dead-lettered command (a 2-minute step
timeout); after the service is fixed and started again, one is retried from the API and
succeeds, the other is aborted with compensation. Tokens without the operator scope, or none,
are refused for every write.
"""

from __future__ import annotations

import httpx
import pytest
from e2e_gateway import OPERATOR, READER, dead_lettered, start_gateway, wait_gateway
from e2e_processes import ORDER_MACHINE, ProcessGroup, wait_ready, wait_serving, wait_until

from orchestrator.demo.participants import example_order
from participants_sdk import protocol

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
DELIVERY_DLQ = protocol.dead_letter_queue(protocol.command_queue("delivery"))


async def saga_status(client: httpx.AsyncClient, saga_id: str) -> str | None:
    response = await client.get(f"/v1/sagas/{saga_id}")
    return response.json()["status"] if response.status_code == 200 else None


async def refuses_writes_without_the_operator_scope(anonymous, reader, order) -> None:
    refused = await anonymous.post("/v1/machines/order/sagas", json=order)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert (await reader.post("/v1/machines/order/sagas", json=order)).status_code == 403
    assert (await anonymous.get("/v1/machines")).status_code == 401
    listed = await reader.get("/v1/machines")
    assert listed.status_code == 200, listed.text
    assert [m["name"] for m in listed.json()] == ["order"]


async def starts_two_sagas(operator, order: dict) -> None:
    started = await operator.post(
        "/v1/machines/order/sagas?wait=20", json=order, headers={"traceparent": TRACEPARENT}
    )
    assert started.status_code == 202, started.text
    assert started.headers["Location"] == "/v1/sagas/gw-1"
    assert started.json()["existed"] is False
    again = await operator.post("/v1/machines/order/sagas", json=order)
    assert (again.status_code, again.json()["existed"]) == (202, True)
    other = {"saga_id": "gw-1", "data": example_order("another")}
    conflict = await operator.post("/v1/machines/order/sagas", json=other)
    assert conflict.status_code == 409
    assert "exists with other data" in conflict.json()["detail"]
    unknown = await operator.post("/v1/machines/nope/sagas", json={"data": {}})
    assert unknown.status_code == 404
    assert "order" in unknown.json()["detail"]
    bad = await operator.post("/v1/machines/order/sagas", json={"data": {"a.b": 1}})
    assert bad.status_code == 422
    assert "'a.b'" in bad.json()["detail"]
    second = {"saga_id": "gw-2", "data": example_order("gw-2")}
    assert (await operator.post("/v1/machines/order/sagas", json=second)).status_code == 202


async def reads_the_waiting_sagas(reader) -> None:
    waiting = await reader.get(
        "/v1/sagas", params={"machine": "order", "state": "deliver_order", "status": "running"}
    )
    assert sorted(s["saga_id"] for s in waiting.json()["sagas"]) == ["gw-1", "gw-2"]
    saga = (await reader.get("/v1/sagas/gw-1")).json()
    assert saga["traceparent"] == TRACEPARENT
    assert [p["step"] for p in saga["pending"]] == ["deliver_order"]
    assert saga["data"]["order_id"] == "gw-1"


async def wait_status(reader, saga_id: str, wanted: str, processes: ProcessGroup) -> None:
    async def reached() -> bool:
        return await saga_status(reader, saga_id) == wanted

    await wait_until(reached, timeout=60, what=f"{saga_id} {wanted}", diagnose=processes.tails)


async def retries_one_and_aborts_the_other(operator, reader, processes: ProcessGroup) -> None:
    assert (await reader.post("/v1/sagas/gw-1/retry", json={})).status_code == 403
    retried = await operator.post(
        "/v1/sagas/gw-1/retry", json={"reason": "delivery fixed", "operator": "alice"}
    )
    assert retried.status_code == 200, retried.text
    assert any(h["event"] == "retry_requested" for h in retried.json()["history"])
    await wait_status(reader, "gw-1", "succeeded", processes)
    aborted = await operator.post(
        "/v1/sagas/gw-2/abort", json={"compensate": True, "reason": "customer cancelled"}
    )
    assert aborted.status_code == 200, aborted.text
    await wait_status(reader, "gw-2", "aborted", processes)
    history = (await reader.get("/v1/sagas/gw-2")).json()["history"]
    assert any(h["event"] == "abort_requested" for h in history)
    refused_again = await operator.post("/v1/sagas/gw-2/abort", json={})
    assert refused_again.status_code == 409
    assert "aborted already" in refused_again.json()["detail"]
    assert (await operator.post("/v1/sagas/nope/retry", json={})).status_code == 404


async def pauses_the_machine_and_reads_it(operator, reader, anonymous) -> None:
    assert (await reader.post("/v1/machines/order/pause", json={})).status_code == 403
    paused = await operator.post("/v1/machines/order/pause", json={"reason": "outage"})
    assert paused.json()["paused"]["reason"] == "outage"
    blocked = await operator.post("/v1/machines/order/sagas", json={"data": {}})
    assert blocked.status_code == 409
    assert "paused" in blocked.json()["detail"]
    assert (await operator.post("/v1/machines/order/resume")).status_code == 200
    detail = (await reader.get("/v1/machines/order")).json()
    assert (detail["counts"]["succeeded"], detail["counts"]["aborted"]) == (1, 1)
    assert detail["mermaid"].startswith("stateDiagram-v2")
    openapi = (await anonymous.get("/openapi.json")).json()
    assert "/v1/sagas/{saga_id}/retry" in openapi["paths"]


@pytest.mark.timeout(240)
async def test_sagas_started_read_retried_and_aborted_through_the_http_api(
    clean_broker, database, processes, report
):
    mongodb_url, _ = database
    daemon = processes.daemon(mongodb_url, machines=ORDER_MACHINE)
    payment = processes.service("payment", failure_rate=0.0)
    stock = processes.service("stock", failure_rate=0.0)
    delivery = processes.service("delivery", failure_rate=0.0, broken=["deliver_order"])
    gateway = start_gateway(processes, mongodb_url)
    await wait_ready(daemon)
    for service in (payment, stock, delivery):
        await wait_serving(service)
    await wait_gateway(gateway)

    async with (
        gateway.client(OPERATOR) as operator,
        gateway.client(READER) as reader,
        gateway.client(None) as anonymous,
    ):
        order = {"saga_id": "gw-1", "data": example_order("gw-1")}
        await refuses_writes_without_the_operator_scope(anonymous, reader, order)
        await starts_two_sagas(operator, order)

        # Both wait in deliver_order: the broken handler dead-lettered their commands.
        async def both_dead_lettered() -> bool:
            return await dead_lettered(processes.amqp_url, DELIVERY_DLQ) >= 2

        await wait_until(
            both_dead_lettered,
            timeout=90,
            what="2 dead-lettered deliveries",
            diagnose=processes.tails,
        )
        await reads_the_waiting_sagas(reader)

        # The delivery service fixed: retry one from the API, abort the other.
        delivery.stop()
        await wait_serving(processes.service("delivery", failure_rate=0.0))
        await retries_one_and_aborts_the_other(operator, reader, processes)
        await pauses_the_machine_and_reads_it(operator, reader, anonymous)
    report("gateway: 2 sagas started over HTTP; one retried to success, one aborted")
