"""Test data shared by the runtime tests."""

from __future__ import annotations


def order(order_id: str) -> dict[str, object]:
    return {
        "order_id": order_id,
        "customer_id": "c-1",
        "total": 42.5,
        "items": [{"sku": "sku-1", "quantity": 2}],
        "address": "1 Test Street",
    }
