"""Fixtures for the runtime suite: every test runs on the memory adapters and on a real
RabbitMQ and MongoDB (the servers of `tests.services`: it fails, never skips).

On the local node of `make services` the suite gets a virtual host of its own; each harness
deletes its topology's queues before it starts and gets a MongoDB database of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from runtime_support import scripted, serve_shop

from orchestrator.core.machines import MachineRegistry, load_machines
from orchestrator.demo.participants import FaultPlan, Ledger
from orchestrator.testing import SagaHarness, ScriptedService
from orchestrator.testing.backends import HarnessBackend, MemoryBackend, RabbitMongoBackend
from tests.services import (
    ServiceUrls,
    own_vhost,
)

REPO = Path(__file__).resolve().parents[2]
MACHINES = REPO / "machines"
BACKENDS = [
    "memory",
    pytest.param("rabbitmq+mongodb", marks=[pytest.mark.rabbitmq, pytest.mark.mongo]),
]


@pytest.fixture(scope="session")
def registry() -> MachineRegistry:
    return load_machines(MACHINES)


@pytest.fixture(scope="session")
def runtime_amqp_url(urls: ServiceUrls):
    with own_vhost(urls, f"sagawire_runtime_{uuid.uuid4().hex[:8]}", REPO) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def make_backend(request: pytest.FixtureRequest) -> Callable[[], HarnessBackend]:
    if request.param == "memory":
        return MemoryBackend
    amqp_url = request.getfixturevalue("runtime_amqp_url")
    mongodb_url = request.getfixturevalue("urls").mongodb
    return lambda: RabbitMongoBackend(amqp_url, mongodb_url)


@pytest.fixture
def make_harness(
    registry: MachineRegistry, make_backend: Callable[[], HarnessBackend]
) -> Callable[..., SagaHarness]:
    """A harness on this test's backend; `make_harness(settings=...)` takes SagaHarness options."""

    def make(**options: Any) -> SagaHarness:
        return SagaHarness(options.pop("registry", registry), backend=make_backend(), **options)

    return make


@pytest_asyncio.fixture
async def harness(make_harness: Callable[..., SagaHarness]):
    async with make_harness() as h:
        yield h


@pytest_asyncio.fixture
async def shop(harness: SagaHarness) -> tuple[FaultPlan, Ledger]:
    return await serve_shop(harness)


@pytest_asyncio.fixture
async def manual(harness: SagaHarness) -> dict[str, ScriptedService]:
    return await scripted(harness)
