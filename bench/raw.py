"""The baseline: aio-pika alone doing what Sagawire does on the wire, with no Sagawire code.

    python -m bench.raw participant URL          answers commands until SIGTERM
    python -m bench.raw driver URL --sagas N     N chains of 3 steps, K in flight; prints JSON

    (both with --services 3 --start: Sagawire's queue layout and a start message per chain)

The driver publishes a command to a topic exchange; the participant process takes it from its
quorum queue and publishes a reply to a reply exchange; the driver takes the reply from its
quorum queue and sends the chain's next command. Messages are persistent, publishes wait for
the broker's confirm and deliveries are acked after the work, as in Sagawire. The figure is
round trips per second: the most steps per second this broker and machine allow.

With `--services 3` the steps go round three services, each with its own command and reply
queue, as Sagawire declares them; with `--start` each chain first sends a start message through
the broker and waits for it, as a saga's start reaches the orchestrator. Together they show how
much of the broker's work per step comes from that layout rather than from Sagawire's code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import uuid
from typing import Any

import aio_pika

from bench.common import HEADERS, PAYLOAD

COMMANDS, REPLIES, STARTS = "bench.raw.commands", "bench.raw.replies", "bench.raw.starts"
QUEUE_ARGS: dict[str, Any] = {"x-queue-type": "quorum"}
SERVICES = ("payment", "kitchen", "delivery")


def _services(count: int) -> tuple[str, ...]:
    return SERVICES[:count]


async def _topology(channel: aio_pika.abc.AbstractChannel, services: int) -> None:
    """A command queue and a reply queue per service (Sagawire's layout), and a start queue."""
    commands = await channel.declare_exchange(COMMANDS, aio_pika.ExchangeType.TOPIC, durable=True)
    replies = await channel.declare_exchange(REPLIES, aio_pika.ExchangeType.DIRECT, durable=True)
    for service in _services(services):
        command_queue = await channel.declare_queue(
            _queue(COMMANDS, service), durable=True, arguments=QUEUE_ARGS
        )
        reply_queue = await channel.declare_queue(
            _queue(REPLIES, service), durable=True, arguments=QUEUE_ARGS
        )
        await command_queue.bind(commands, f"{service}.*")
        await reply_queue.bind(replies, service)
    starts = await channel.declare_queue(STARTS, durable=True, arguments=QUEUE_ARGS)
    await starts.bind(replies, "start")


def _queue(base: str, service: str) -> str:
    """A service's queue: payment's keeps the name it had when it was the only service."""
    return base if service == "payment" else f"{base}.{service}"


def _message(correlation_id: str, kind: str) -> aio_pika.Message:
    return aio_pika.Message(
        body=json.dumps({**PAYLOAD, "order_id": correlation_id}).encode(),
        headers=dict(HEADERS),  # type: ignore[arg-type]
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=uuid.uuid4().hex,
        correlation_id=correlation_id,
        type=kind,
    )


async def participant(url: str, prefetch: int, services: int) -> None:
    connection = await aio_pika.connect(url)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with connection:
        setup = await connection.channel()
        await _topology(setup, services)
        publisher = await connection.channel(publisher_confirms=True)
        replies = await publisher.get_exchange(REPLIES)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=prefetch)

        for service in _services(services):

            async def handle(
                incoming: aio_pika.abc.AbstractIncomingMessage, service: str = service
            ) -> None:
                json.loads(incoming.body)  # as a participant reads its command
                await replies.publish(_message(incoming.correlation_id or "", "done"), service)
                await incoming.ack()

            await (await consumer.get_queue(_queue(COMMANDS, service))).consume(handle)
        print("serving", flush=True)  # noqa: T201 - the runner waits for it
        await stop.wait()


async def driver(
    url: str, sagas: int, steps: int, in_flight: int, prefetch: int, *, services: int, start: bool
) -> dict[str, float]:
    connection = await aio_pika.connect(url)
    async with connection:
        setup = await connection.channel()
        await _topology(setup, services)
        for service in _services(services):
            await (await setup.get_queue(_queue(REPLIES, service))).purge()
        publisher = await connection.channel(publisher_confirms=True)
        commands = await publisher.get_exchange(COMMANDS)
        starts = await publisher.get_exchange(REPLIES)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=prefetch)
        waiting: dict[str, asyncio.Future[None]] = {}

        async def on_reply(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            json.loads(incoming.body)
            future = waiting.pop(incoming.correlation_id or "", None)
            await incoming.ack()
            if future is not None and not future.done():
                future.set_result(None)

        for queue in [*(_queue(REPLIES, s) for s in _services(services)), STARTS]:
            await (await consumer.get_queue(queue)).consume(on_reply)
        limit = asyncio.Semaphore(in_flight)
        loop = asyncio.get_running_loop()

        async def chain(n: int) -> None:
            async with limit:
                if start:  # as a saga's start goes through the broker to the orchestrator
                    key = f"s{n}-start"
                    started = waiting[key] = loop.create_future()
                    await starts.publish(_message(key, "start"), "start")
                    await started
                for step in range(steps):
                    key = f"s{n}-{step}"
                    service = SERVICES[step % services]
                    replied = waiting[key] = loop.create_future()
                    await commands.publish(_message(key, "execute"), f"{service}.execute")
                    await replied

        began, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(chain(n) for n in range(sagas)))
        elapsed, cpu = time.monotonic() - began, time.process_time() - cpu
    return {
        "round_trips": sagas * steps,
        "seconds": elapsed,
        "per_s": sagas * steps / elapsed,
        "driver_cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["participant", "driver"])
    parser.add_argument("url")
    parser.add_argument("--sagas", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument(
        "--services",
        type=int,
        choices=range(1, len(SERVICES) + 1),
        default=1,
        help="steps go round this many services, each with its own command and reply queue",
    )
    parser.add_argument(
        "--start", action="store_true", help="each chain begins with a start message"
    )
    args = parser.parse_args()
    if args.role == "participant":
        asyncio.run(participant(args.url, args.prefetch, args.services))
    else:
        result = asyncio.run(
            driver(
                args.url,
                args.sagas,
                args.steps,
                args.in_flight,
                args.prefetch,
                services=args.services,
                start=args.start,
            )
        )
        print(json.dumps(result), flush=True)  # noqa: T201 - the runner reads it


if __name__ == "__main__":
    main()
