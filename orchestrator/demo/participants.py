"""Demo participants for the order machine, written only against `participants_sdk`.

A `FaultPlan` says which orders fail at which service, so a demo run knows in advance how many
sagas must end compensated. Every participant counts the effects it applied per idempotency key:
a count above one would mean a step ran twice.
"""

from __future__ import annotations

import collections
import dataclasses
import uuid

from pydantic import BaseModel

from participants_sdk import CommandContext, Participant, Reject

FAILING_SERVICES = ("payment", "stock", "delivery")
FAILURE_EVENTS = {
    "payment": "payment_failed",
    "stock": "out_of_stock",
    "delivery": "delivery_failed",
}


@dataclasses.dataclass
class FaultPlan:
    """Order id -> the service that rejects it."""

    failures: dict[str, str] = dataclasses.field(default_factory=dict)

    def fails_at(self, order_id: str, service: str) -> bool:
        return self.failures.get(order_id) == service


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


def payment_service(plan: FaultPlan, ledger: Ledger) -> Participant:
    payments = Participant("payment")

    @payments.command_handler("execute_payment")
    async def execute_payment(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
        if plan.fails_at(cmd.order_id, "payment"):
            ledger.rejected += 1
            raise Reject("payment_failed", reason="card declined")
        ledger.apply(ctx.idempotency_key)
        return PaymentExecuted(payment_id=f"pay-{uuid.uuid4().hex[:12]}")

    @payments.command_handler("refund_payment")
    async def refund_payment(cmd: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
        ledger.apply(ctx.idempotency_key)
        return PaymentRefunded(order_id=cmd.order_id)

    return payments


def stock_service(plan: FaultPlan, ledger: Ledger) -> Participant:
    stock = Participant("stock")

    @stock.command_handler("prepare_order")
    async def prepare_order(cmd: PrepareOrder, ctx: CommandContext) -> OrderPrepared:
        if plan.fails_at(cmd.order_id, "stock"):
            ledger.rejected += 1
            raise Reject("out_of_stock", sku=cmd.items[0].sku if cmd.items else None)
        ledger.apply(ctx.idempotency_key)
        return OrderPrepared(reservation_id=f"res-{uuid.uuid4().hex[:12]}")

    @stock.command_handler("release_stock")
    async def release_stock(cmd: ReleaseStock, ctx: CommandContext) -> StockReleased:
        ledger.apply(ctx.idempotency_key)
        return StockReleased(order_id=cmd.order_id)

    return stock


def delivery_service(plan: FaultPlan, ledger: Ledger) -> Participant:
    delivery = Participant("delivery")

    @delivery.command_handler("deliver_order")
    async def deliver_order(cmd: DeliverOrder, ctx: CommandContext) -> OrderDelivered:
        if plan.fails_at(cmd.order_id, "delivery"):
            ledger.rejected += 1
            raise Reject("delivery_failed", reason="address not served")
        ledger.apply(ctx.idempotency_key)
        return OrderDelivered(tracking_id=f"trk-{uuid.uuid4().hex[:12]}")

    return delivery


def demo_services(plan: FaultPlan, ledger: Ledger) -> list[Participant]:
    return [
        payment_service(plan, ledger),
        stock_service(plan, ledger),
        delivery_service(plan, ledger),
    ]
