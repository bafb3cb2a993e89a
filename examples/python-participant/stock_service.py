"""The order machine's stock service, on the participant SDK alone, its data in MongoDB.

    pip install 'sagawire-sdk[mongodb]'
    export SAGAWIRE_AMQP_URL=amqp://guest:guest@localhost:5672/
    export STOCK_MONGODB_URL=mongodb://localhost:27017/stock
    python stock_service.py

Each command takes effect once, whenever the service is killed (README, "Exactly once across
restarts"):

- Its replies are kept in MongoDB (`MongoDedupeStore`). Killed after storing a reply and before
  the command's ack, the service gets the command again and answers it from there: the handler
  does not run again.
- Its effect holds the command's idempotency key in the same write: a reservation is a document
  whose `_id` is the key and the item. Killed after that write and before storing the reply, the
  service runs the handler again for the redelivered command: the insert then fails as a
  duplicate, nothing is reserved twice, and the reply is the same one (its id derives from the
  key).

An order holding several items inserts several documents, each once: a crash half-way through
leaves the rest to the handler's next run. A service whose effect spans documents and must be all
or nothing uses a transaction instead (a replica set), with the reply stored in it:
`await dedupe.put(ctx.idempotency_key, reply_of(result), session=session)`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import structlog
from pydantic import BaseModel
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from participants_sdk import CommandContext, Participant, RabbitBroker, Reject
from participants_sdk.mongo_dedupe import MongoDedupeStore

MAX_QUANTITY = 10
"""More of one item than this in an order is out of stock: a business failure."""


class Item(BaseModel):
    sku: str
    quantity: int


class PrepareOrder(BaseModel):
    order_id: str
    items: list[Item]


class OrderPrepared(BaseModel):
    reservation_id: str


class ReleaseStock(BaseModel):
    order_id: str


class StockReleased(BaseModel):
    order_id: str


async def reserve(reservations: AsyncCollection[dict[str, Any]], key: str, item: Item) -> bool:
    """Reserve `item` for the step visit `key`; False if that visit reserved it before."""
    try:
        await reservations.insert_one(
            {"_id": f"{key}|{item.sku}", "key": key, "sku": item.sku, "quantity": item.quantity}
        )
    except DuplicateKeyError:
        return False
    return True


async def release(reservations: AsyncCollection[dict[str, Any]], reserved_by: str) -> int:
    """Release what the step visit `reserved_by` reserved; releasing again changes nothing."""
    result = await reservations.update_many(
        {"key": reserved_by, "released": {"$ne": True}}, {"$set": {"released": True}}
    )
    return result.modified_count


def stock_service(db: AsyncDatabase[dict[str, Any]], dedupe: MongoDedupeStore) -> Participant:
    stock = Participant("stock", dedupe=dedupe)
    reservations = db["reservations"]

    @stock.command_handler("prepare_order")
    async def prepare_order(cmd: PrepareOrder, ctx: CommandContext) -> OrderPrepared:
        too_many = [item.sku for item in cmd.items if item.quantity > MAX_QUANTITY]
        if too_many:
            raise Reject("out_of_stock", order_id=cmd.order_id, skus=too_many)
        for item in cmd.items:
            new = await reserve(reservations, ctx.idempotency_key, item)
            ctx.log.info("reserved", sku=item.sku, quantity=item.quantity, new=new)
        return OrderPrepared(reservation_id=f"res-{ctx.idempotency_key}")

    @stock.command_handler("release_stock")
    async def release_stock(cmd: ReleaseStock, ctx: CommandContext) -> StockReleased:
        released = 0 if ctx.compensates is None else await release(reservations, ctx.compensates)
        ctx.log.info("released", order_id=cmd.order_id, reservations=released)
        return StockReleased(order_id=cmd.order_id)

    return stock


def log_json_to_stderr() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


async def main() -> None:
    log_json_to_stderr()
    amqp_url = os.environ.get("SAGAWIRE_AMQP_URL", "amqp://guest:guest@localhost:5672/")
    mongodb_url = os.environ.get("STOCK_MONGODB_URL", "mongodb://localhost:27017/stock")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    dedupe = MongoDedupeStore(client.get_default_database()["replies"])
    await dedupe.ensure_indexes()
    broker = await RabbitBroker.connect(amqp_url, name="stock-service")
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        async with stock_service(client.get_default_database(), dedupe).serve(broker):
            print("serving stock", flush=True)  # noqa: T201 - a supervisor may wait for it
            await stop.wait()
    finally:
        await broker.close()
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
