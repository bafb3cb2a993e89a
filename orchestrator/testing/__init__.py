"""Testing your own machines: a saga harness on the memory broker and store, or on real servers.

    async with SagaHarness(registry, backend=MemoryBackend()) as h:
        await h.system.start_saga("order", data, saga_id="o-1")
        await h.drain()

`SagaHarness` (in `harness`) gives a manual clock, `crash()` and `rebuild()`; `ScriptedService`
answers commands as a script says. `RabbitMongoBackend(amqp_url, mongodb_url)` (in `backends`)
runs the same test on a real RabbitMQ and MongoDB.
"""

from orchestrator.testing.backends import HarnessBackend, MemoryBackend, RabbitMongoBackend
from orchestrator.testing.harness import SagaHarness, ScriptedService, drain

__all__ = [
    "HarnessBackend",
    "MemoryBackend",
    "RabbitMongoBackend",
    "SagaHarness",
    "ScriptedService",
    "drain",
]
