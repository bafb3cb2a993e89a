"""The baseline: aio-pika alone doing what Sagawire does on the wire, with no Sagawire code.

    python -m bench.raw participant URL          answers commands until SIGTERM
    python -m bench.raw driver URL --sagas N     N chains of 3 steps, K in flight; prints JSON

The driver publishes a command to a topic exchange; the participant process takes it from its
quorum queue and publishes a reply to a reply exchange; the driver takes the reply from its
quorum queue and sends the chain's next command. Messages are persistent, publishes wait for
the broker's confirm and deliveries are acked after the work, as in Sagawire. The figure is
round trips per second: the most steps per second this broker and machine allow.
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

COMMANDS, REPLIES = "bench.raw.commands", "bench.raw.replies"
QUEUE_ARGS: dict[str, Any] = {"x-queue-type": "quorum"}


async def _topology(channel: aio_pika.abc.AbstractChannel) -> None:
    commands = await channel.declare_exchange(COMMANDS, aio_pika.ExchangeType.TOPIC, durable=True)
    replies = await channel.declare_exchange(REPLIES, aio_pika.ExchangeType.DIRECT, durable=True)
    command_queue = await channel.declare_queue(COMMANDS, durable=True, arguments=QUEUE_ARGS)
    reply_queue = await channel.declare_queue(REPLIES, durable=True, arguments=QUEUE_ARGS)
    await command_queue.bind(commands, "payment.*")
    await reply_queue.bind(replies, "payment")


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


async def participant(url: str, prefetch: int) -> None:
    connection = await aio_pika.connect(url)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with connection:
        setup = await connection.channel()
        await _topology(setup)
        publisher = await connection.channel(publisher_confirms=True)
        replies = await publisher.get_exchange(REPLIES)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=prefetch)
        queue = await consumer.get_queue(COMMANDS)

        async def handle(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            json.loads(incoming.body)  # as a participant reads its command
            await replies.publish(_message(incoming.correlation_id or "", "done"), "payment")
            await incoming.ack()

        await queue.consume(handle)
        print("serving", flush=True)  # noqa: T201 - the runner waits for it
        await stop.wait()


async def driver(
    url: str, sagas: int, steps: int, in_flight: int, prefetch: int
) -> dict[str, float]:
    connection = await aio_pika.connect(url)
    async with connection:
        setup = await connection.channel()
        await _topology(setup)
        await (await setup.get_queue(REPLIES)).purge()
        publisher = await connection.channel(publisher_confirms=True)
        commands = await publisher.get_exchange(COMMANDS)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=prefetch)
        waiting: dict[str, asyncio.Future[None]] = {}

        async def on_reply(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            json.loads(incoming.body)
            future = waiting.pop(incoming.correlation_id or "", None)
            await incoming.ack()
            if future is not None and not future.done():
                future.set_result(None)

        await (await consumer.get_queue(REPLIES)).consume(on_reply)
        limit = asyncio.Semaphore(in_flight)
        loop = asyncio.get_running_loop()

        async def chain(n: int) -> None:
            async with limit:
                for step in range(steps):
                    key = f"s{n}-{step}"
                    replied = waiting[key] = loop.create_future()
                    await commands.publish(_message(key, "execute_payment"), "payment.execute")
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
    args = parser.parse_args()
    if args.role == "participant":
        asyncio.run(participant(args.url, args.prefetch))
    else:
        result = asyncio.run(
            driver(args.url, args.sagas, args.steps, args.in_flight, args.prefetch)
        )
        print(json.dumps(result), flush=True)  # noqa: T201 - the runner reads it


if __name__ == "__main__":
    main()
