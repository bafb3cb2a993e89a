"""Test data shared by the runtime tests."""

from __future__ import annotations

from orchestrator.demo.participants import FaultPlan, Ledger, demo_services, example_order
from orchestrator.testing import SagaHarness, ScriptedService


async def serve_shop(harness: SagaHarness) -> tuple[FaultPlan, Ledger]:
    """The demo payment, stock and delivery services on the harness's broker."""
    plan, ledger = FaultPlan(), Ledger()
    for service in demo_services(plan, ledger):
        await harness.serve(service)
    return plan, ledger


async def scripted(harness: SagaHarness) -> dict[str, ScriptedService]:
    """Payment, stock and delivery played by the test, on the harness's broker."""
    services = {
        name: ScriptedService(harness.connect, name) for name in ("payment", "stock", "delivery")
    }
    for service in services.values():
        await service.start()
    return services


order = example_order
