from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio

from orchestrator.demo.participants import FaultPlan, Ledger, demo_services
from orchestrator.machines import MachineRegistry, load_machines
from orchestrator.testing import SagaHarness, ScriptedService

MACHINES = Path(__file__).resolve().parents[2] / "machines"


@pytest.fixture(scope="session")
def registry() -> MachineRegistry:
    return load_machines(MACHINES)


@pytest_asyncio.fixture
async def harness(registry: MachineRegistry):
    async with SagaHarness(registry) as h:
        yield h


@pytest_asyncio.fixture
async def shop(harness: SagaHarness):
    """The demo payment, stock and delivery services on the harness's broker."""
    plan, ledger = FaultPlan(), Ledger()
    for service in demo_services(plan, ledger):
        await harness.serve(service)
    return plan, ledger


@pytest_asyncio.fixture
async def manual(harness: SagaHarness) -> dict[str, ScriptedService]:
    services = {
        name: ScriptedService(harness.broker, name) for name in ("payment", "stock", "delivery")
    }
    for service in services.values():
        await service.start()
    return services
