"""`sagawire run`: connect, register the machines, serve until SIGTERM, stop gracefully.

Start-up fails fast, with one line that names the redacted URL and what to check, when RabbitMQ
or MongoDB cannot be reached or a machine definition is wrong. After that, the broker connection
reconnects by itself, and failing database calls are retried while deliveries wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from orchestrator.adapters.memory import MemorySagaStore
from orchestrator.adapters.mongo import MongoSagaStore
from orchestrator.adapters.rabbitmq import RabbitBroker
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.machines import MachineRegistry, load_machines
from orchestrator.daemon.http import HealthServer, health_routes
from orchestrator.ports import SagaStore
from orchestrator.runtime.system import ActorSystem
from orchestrator.settings import Settings

log = structlog.get_logger("sagawire.daemon")


def with_stored_versions(
    registry: MachineRegistry, stored: list[MachineDefinition]
) -> MachineRegistry:
    """The machines from files, plus stored versions the files no longer hold (running sagas
    may still be on them)."""
    extra = [definition for definition in stored if definition.key not in registry]
    if not extra:
        return registry
    return MachineRegistry([*registry, *extra])


async def run_daemon(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set, or SIGTERM / SIGINT arrives."""
    stop = stop or asyncio.Event()
    registry = load_machines(settings.machines)
    log.info("starting", **settings.redacted(), machines_loaded=len(registry))
    broker = await RabbitBroker.connect(
        settings.amqp_url,
        queue_type=settings.queue_type,
        delivery_limit=settings.delivery_limit,
        name="sagawire-orchestrator",
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(broker.close)
        store: SagaStore
        if settings.store == "memory":
            log.warning(
                "memory_store", detail="sagas are kept in this process only and lost at exit"
            )
            store = MemorySagaStore()
        else:
            mongo = await MongoSagaStore.connect(settings.mongodb_url)
            stack.push_async_callback(mongo.close)
            await mongo.ensure_indexes()
            await mongo.register_definitions(registry)
            registry = with_stored_versions(registry, await mongo.stored_definitions())
            store = mongo
        system = ActorSystem(registry, store, broker, settings=settings.runtime())
        http = None
        if settings.http_port:
            http = HealthServer(settings.http_host, settings.http_port, health_routes(system))
            await http.start()
            stack.push_async_callback(http.stop)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
            stack.callback(loop.remove_signal_handler, signum)
        async with system:
            log.info(
                "ready",
                machines=[f"{d.machine} v{d.version}" for d in registry],
                http_port=http.port if http else None,
            )
            await stop.wait()
            log.info("stopping")
    log.info("stopped")
