"""`sagawire gateway` as a process of an end-to-end test: start it, wait for it, call it; and
the depth of a dead-letter queue, which the gateway tests wait on."""

from __future__ import annotations

import contextlib
import dataclasses

import aio_pika
import httpx
from e2e_processes import ManagedProcess, ProcessGroup, free_port, wait_until

from orchestrator.adapters.rabbitmq import dead_letters

OPERATOR = "op-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"


@dataclasses.dataclass
class Gateway(ManagedProcess):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


def start_gateway(processes: ProcessGroup, mongodb_url: str, *, auth: bool = True) -> Gateway:
    """`python -m orchestrator gateway` on a free port: with the OPERATOR and READER tokens, or
    `--no-auth`."""
    port = free_port()
    env = {
        "SAGAWIRE_AMQP_URL": processes.amqp_url,
        "SAGAWIRE_MONGODB_URL": mongodb_url,
        "SAGAWIRE_API_TOKENS": f"{OPERATOR}:operator,{READER}:read",
        "SAGAWIRE_LOG_JSON": "true",
    }
    args = ["-m", "orchestrator", "gateway", "--port", str(port)]
    if not auth:
        args.append("--no-auth")
    name = "gateway" if auth else "gateway-no-auth"
    return processes._spawn(Gateway, name, args, env, port=port)


async def wait_gateway(gateway: Gateway) -> None:
    async def up() -> bool:
        if not gateway.alive:
            raise AssertionError(f"the gateway exited\n{gateway.tail()}")
        async with gateway.client(None) as client:
            with contextlib.suppress(httpx.TransportError):
                return (await client.get("/healthz")).status_code == 200
        return False

    await wait_until(up, timeout=30, what="the gateway's /healthz", diagnose=gateway.tail)


async def dead_lettered(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        return await dead_letters.depth(connection, queue)
    except dead_letters.QueueMissing:
        return 0
    finally:
        await connection.close()
