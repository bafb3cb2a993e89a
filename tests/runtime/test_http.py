from __future__ import annotations

import asyncio

import pytest
from runtime_support import order

from orchestrator.daemon.http import HealthServer, health_routes

pytestmark = pytest.mark.asyncio


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    status = int(response.split(" ", 2)[1])
    return status, response.split("\r\n\r\n", 1)[1]


async def test_health_readiness_and_metrics(harness, shop) -> None:
    server = HealthServer("127.0.0.1", 0, health_routes(harness.system))
    await server.start()
    try:
        assert await get(server.port, "/healthz") == (200, "ok\n")
        assert await get(server.port, "/readyz") == (200, "ready\n")
        await harness.start("order", order("m-1"), "m-1")
        await harness.drain()
        status, body = await get(server.port, "/metrics")
        assert status == 200
        assert 'sagawire_sagas_finished_total{machine="order",outcome="succeeded"} 1.0' in body
        assert (
            'sagawire_step_latency_seconds_count{machine="order",step="execute_payment"} 1.0'
            in body
        )
        assert "sagawire_live_actors" in body
        assert 'sagawire_commands_published_total{machine="order",service="payment"} 1.0' in body
        # The process's and Python's own metrics, from the collectors the daemon registers.
        assert "process_resident_memory_bytes" in body
        assert "process_cpu_seconds_total" in body
        assert "python_info{" in body
        assert "python_gc_collections_total" in body
        harness.system.stats.sweep_seconds = 0.25
        assert "sagawire_sweep_seconds 0.25" in (await get(server.port, "/metrics"))[1]
        assert (await get(server.port, "/nope"))[0] == 404
        assert (await get(server.port, "/healthz", "POST"))[0] == 405
        await harness.system.stop()
        assert await get(server.port, "/readyz") == (503, "not ready\n")
    finally:
        await server.stop()
