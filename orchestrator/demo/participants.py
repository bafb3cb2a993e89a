"""Demo participants for the order machine, written only against `participants_sdk`.

A `FaultPlan` says which orders fail at which service, so a demo run knows in advance how many
sagas must end compensated. Every participant counts the effects it applied per idempotency key:
a count above one would mean a step ran twice.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import uuid
from typing import Any

from pydantic import BaseModel

from participants_sdk import CommandContext, DedupeStore, Participant, Reject

FAILING_SERVICES = ("payment", "stock", "delivery")
FAILURE_EVENTS = {
    "payment": "payment_failed",
    "stock": "out_of_stock",
    "delivery": "delivery_failed",
}


@dataclasses.dataclass
class FaultPlan:
    """Which orders fail at which service.

    `failures` names them one by one; `rate` makes about that share of all orders fail, chosen
    from a hash of the order id, so that separate processes agree without talking.
    """

    failures: dict[str, str] = dataclasses.field(default_factory=dict)
    rate: float = 0.0

    def failure_for(self, order_id: str) -> str | None:
        if order_id in self.failures:
            return self.failures[order_id]
        if self.rate <= 0:
            return None
        digest = hashlib.sha256(order_id.encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 >= self.rate:
            return None
        return FAILING_SERVICES[digest[8] % len(FAILING_SERVICES)]

    def fails_at(self, order_id: str, service: str) -> bool:
        return self.failure_for(order_id) == service


@dataclasses.dataclass
class Ledger:
    """What the demo services did, per idempotency key: the test of "applied at most once"."""

    applied: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    rejected: int = 0

    def apply(self, key: str) -> None:
        self.applied[key] += 1

    @property
    def applied_twice(self) -> int:
        return sum(1 for count in self.applied.values() if count > 1)


class Item(BaseModel):
    sku: str
    quantity: int


class ExecutePayment(BaseModel):
    order_id: str
    amount: float
    customer_id: str


class PaymentExecuted(BaseModel):
    payment_id: str


class RefundPayment(BaseModel):
    order_id: str
    payment_id: str | None = None


class PaymentRefunded(BaseModel):
    order_id: str


class PrepareOrder(BaseModel):
    order_id: str
    items: list[Item]


class OrderPrepared(BaseModel):
    reservation_id: str


class ReleaseStock(BaseModel):
    order_id: str


class StockReleased(BaseModel):
    order_id: str


class DeliverOrder(BaseModel):
    order_id: str
    address: str


class OrderDelivered(BaseModel):
    tracking_id: str


@dataclasses.dataclass
class DemoShop:
    """The three demo services, sharing one fault plan and one ledger.

    `broken` names commands whose handler always raises (not a business failure): the SDK
    retries them with growing delays and then dead-letters them.
    """

    plan: FaultPlan
    ledger: Ledger
    broken: frozenset[str] = frozenset()
    max_retries: int = 5
    retry_backoff: float = 0.5
    dedupe: DedupeStore | None = None
    """Shared by the services; each gets a memory store of its own when None."""
    handler_delay: float = 0.0
    """Seconds every handler takes before it acts."""

    def _participant(self, service: str) -> Participant:
        return Participant(
            service,
            max_retries=self.max_retries,
            retry_backoff=self.retry_backoff,
            dedupe=self.dedupe,
        )

    async def _pause(self) -> None:
        if self.handler_delay > 0:
            await asyncio.sleep(self.handler_delay)

    def _act(self, command: str, order_id: str, service: str, key: str, **details: object) -> None:
        """Fail the way the plan says, or record the effect."""
        if command in self.broken:
            raise RuntimeError(f"{service}.{command} is broken (demo fault)")
        if self.plan.fails_at(order_id, service):
            self.ledger.rejected += 1
            raise Reject(FAILURE_EVENTS[service], **details)
        self.ledger.apply(key)

    def _undo(self, command: str, service: str, key: str) -> None:
        if command in self.broken:
            raise RuntimeError(f"{service}.{command} is broken (demo fault)")
        self.ledger.apply(key)

    def payment(self) -> Participant:
        payments = self._participant("payment")

        @payments.command_handler("execute_payment")
        async def execute_payment(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
            await self._pause()
            self._act(
                "execute_payment",
                cmd.order_id,
                "payment",
                ctx.idempotency_key,
                reason="card declined",
            )
            return PaymentExecuted(payment_id=f"pay-{uuid.uuid4().hex[:12]}")

        @payments.command_handler("refund_payment")
        async def refund_payment(cmd: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
            await self._pause()
            self._undo("refund_payment", "payment", ctx.idempotency_key)
            return PaymentRefunded(order_id=cmd.order_id)

        return payments

    def stock(self) -> Participant:
        stock = self._participant("stock")

        @stock.command_handler("prepare_order")
        async def prepare_order(cmd: PrepareOrder, ctx: CommandContext) -> OrderPrepared:
            await self._pause()
            self._act(
                "prepare_order",
                cmd.order_id,
                "stock",
                ctx.idempotency_key,
                sku=cmd.items[0].sku if cmd.items else None,
            )
            return OrderPrepared(reservation_id=f"res-{uuid.uuid4().hex[:12]}")

        @stock.command_handler("release_stock")
        async def release_stock(cmd: ReleaseStock, ctx: CommandContext) -> StockReleased:
            await self._pause()
            self._undo("release_stock", "stock", ctx.idempotency_key)
            return StockReleased(order_id=cmd.order_id)

        return stock

    def delivery(self) -> Participant:
        delivery = self._participant("delivery")

        @delivery.command_handler("deliver_order")
        async def deliver_order(cmd: DeliverOrder, ctx: CommandContext) -> OrderDelivered:
            await self._pause()
            self._act(
                "deliver_order",
                cmd.order_id,
                "delivery",
                ctx.idempotency_key,
                reason="address not served",
            )
            return OrderDelivered(tracking_id=f"trk-{uuid.uuid4().hex[:12]}")

        return delivery

    def services(self, names: tuple[str, ...] = FAILING_SERVICES) -> list[Participant]:
        factories = {"payment": self.payment, "stock": self.stock, "delivery": self.delivery}
        unknown = sorted(set(names) - set(factories))
        if unknown:
            raise ValueError(
                f"no demo service {', '.join(unknown)}; choose from {', '.join(factories)}"
            )
        return [factories[name]() for name in names]


def example_order(order_id: str) -> dict[str, Any]:
    """Saga data the order machine and the demo services accept, for tests and examples."""
    return {
        "order_id": order_id,
        "customer_id": f"c-{order_id}",
        "total": 42.5,
        "items": [{"sku": "sku-1", "quantity": 2}],
        "address": "1 Main St",
    }


def demo_services(plan: FaultPlan, ledger: Ledger) -> list[Participant]:
    return DemoShop(plan, ledger).services()


def demo_participants() -> list[Participant]:
    """The payment, stock and delivery services with no planned failures, made without arguments
    (for `sagawire asyncapi --participant orchestrator.demo.participants:demo_participants`)."""
    return demo_services(FaultPlan(), Ledger())
