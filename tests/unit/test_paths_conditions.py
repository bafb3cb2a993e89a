"""Durations, `$.path` references, choice conditions and input templates: pure functions."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.core.conditions import Condition
from orchestrator.core.definition import render_template
from orchestrator.core.durations import format_duration, parse_duration
from orchestrator.core.paths import MissingPath, parse_path, parse_save_path

# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2d", 172800.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (10, 10.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3x", "", "s", "30", "-1s", "1h30", "m5", True, None, [1]])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_negative_number_of_seconds_is_rejected() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(-5)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (30.0, "30s"), (90.0, "90s"), (300.0, "5m"), (5400.0, "90m"), (7200.0, "2h")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# -- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts", "optional"),
    [
        ("$", (), False),
        ("$.order_id", ("order_id",), False),
        ("$.payment.payment_id", ("payment", "payment_id"), False),
        ("$.items[0].sku", ("items", 0, "sku"), False),
        ("$.line-items[12]", ("line-items", 12), False),
        ("$.payment.payment_id?", ("payment", "payment_id"), True),
    ],
)
def test_parse_path(text: str, parts: tuple[str | int, ...], optional: bool) -> None:
    path = parse_path(text)
    assert path.parts == parts
    assert path.optional is optional
    assert path.text == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("order_id", "a path starts with '\\$'"),
        ("", "a path starts with '\\$'"),
        ("$.a..b", "unexpected '..b'"),
        ("$order_id", "unexpected 'order_id'"),
        ("$.1st", "unexpected '.1st'"),
        ("$.items[x]", "unexpected '\\[x\\]'"),
        ("$.items[-1]", "unexpected"),
        ("$.a.", "unexpected '.'"),
    ],
)
def test_parse_path_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_path(text)


DATA: dict[str, Any] = {
    "order_id": "o-1",
    "total": 120,
    "payment": {"payment_id": "p-9", "refunded": None},
    "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}],
}


def test_resolve() -> None:
    assert parse_path("$").resolve(DATA) is DATA
    assert parse_path("$.order_id").resolve(DATA) == "o-1"
    assert parse_path("$.items[1].sku").resolve(DATA) == "b"
    assert parse_path("$.payment.refunded").resolve(DATA) is None
    assert parse_path("$.payment.missing?").resolve(DATA) is None
    assert parse_path("$.items[5].sku?").resolve(DATA) is None


@pytest.mark.parametrize("text", ["$.missing", "$.items[2]", "$.order_id.x", "$.payment[0]"])
def test_resolve_missing_raises(text: str) -> None:
    with pytest.raises(MissingPath, match=r"saga data has nothing at \$") as caught:
        parse_path(text).resolve(DATA)
    assert caught.value.path.text == text


def test_exists_ignores_optional_and_counts_null() -> None:
    assert parse_path("$.payment.refunded").exists(DATA)
    assert not parse_path("$.payment.missing").exists(DATA)
    assert not parse_path("$.payment.missing?").exists(DATA)


def test_assign_creates_objects_on_the_way() -> None:
    data: dict[str, Any] = {"payment": "not an object"}
    parse_path("$.stock.reservation.id").assign(data, "r-1")
    parse_path("$.payment.id").assign(data, "p-1")
    parse_save_path("order").assign(data, {"id": "o-1"})
    assert data == {
        "stock": {"reservation": {"id": "r-1"}},
        "payment": {"id": "p-1"},
        "order": {"id": "o-1"},
    }
    with pytest.raises(ValueError, match="cannot assign to the whole"):
        parse_path("$").assign(data, 1)


def test_parse_save_path() -> None:
    assert parse_save_path("payment").parts == ("payment",)
    assert parse_save_path("$.payment.result").parts == ("payment", "result")
    for text in ("$", "$.items[0]", "$.payment?", "pay ment"):
        with pytest.raises(ValueError, match="invalid"):
            parse_save_path(text)


# -- conditions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"path": "$.order_id", "equals": "o-1"}, True),
        ({"path": "$.order_id", "equals": "o-2"}, False),
        ({"path": "$.payment.refunded", "equals": None}, True),
        ({"path": "$.order_id", "equals": None}, False),
        ({"path": "$.missing", "equals": None}, False),
        ({"path": "$.order_id", "not_equals": None}, True),
        ({"path": "$.total", "gt": 100}, True),
        ({"path": "$.total", "gt": 120}, False),
        ({"path": "$.total", "gte": 120}, True),
        ({"path": "$.total", "lt": 120.5}, True),
        ({"path": "$.total", "lte": 119}, False),
        ({"path": "$.day", "gt": "2024-01-01"}, True),
        ({"path": "$.day", "lt": "2024-01-01"}, False),
        ({"path": "$.order_id", "gt": 1}, False),
        ({"path": "$.total", "gt": "100"}, False),
        ({"path": "$.flag", "gt": 0}, False),
        ({"path": "$.missing", "gt": 0}, False),
        ({"path": "$.missing", "lt": 0}, False),
        ({"path": "$.payment.refunded", "exists": True}, True),
        ({"path": "$.missing", "exists": True}, False),
        ({"path": "$.missing", "exists": False}, True),
        ({"path": "$.order_id", "in": ["o-1", "o-2"]}, True),
        ({"path": "$.order_id", "in": []}, False),
        ({"path": "$.missing", "in": [None]}, False),
        ({"path": "$.items[0].sku", "equals": "a"}, True),
    ],
)
def test_comparison(spec: dict[str, Any], expected: bool) -> None:
    data = {**DATA, "day": "2024-05-01", "flag": True}
    assert Condition.model_validate(spec).evaluate(data) is expected


def test_combinations() -> None:
    big = {"path": "$.total", "gt": 100}
    small = {"path": "$.total", "lt": 10}
    paid = {"path": "$.payment.payment_id", "exists": True}
    cases = [
        ({"all": [big, paid]}, True),
        ({"all": [big, small]}, False),
        ({"all": []}, True),
        ({"any": [small, paid]}, True),
        ({"any": [small]}, False),
        ({"any": []}, False),
        ({"not": small}, True),
        ({"not": {"any": [small, {"not": paid}]}}, True),
        ({"all": [{"any": [small, big]}, {"not": {"path": "$.missing", "gt": 0}}]}, True),
    ]
    for spec, expected in cases:
        assert Condition.model_validate(spec).evaluate(DATA) is expected, spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"path": "$.total", "gt": 1, "lt": 9}, "exactly one of .* got gt, lt"),
        ({"path": "$.total"}, "got none"),
        ({"equals": 1}, "a comparison needs 'path'"),
        ({"path": "total", "equals": 1}, "a path starts with"),
        ({"path": "$.total", "gt": 1, "all": []}, "either a comparison"),
        ({"all": [], "any": []}, "use one of all/any/not"),
        ({"path": "$.total", "matches": ".*"}, "Extra inputs"),
    ],
)
def test_invalid_conditions(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Condition.model_validate(spec)


# -- input templates --------------------------------------------------------------------------


def test_render_template() -> None:
    template = {
        "order_id": "$.order_id",
        "payment_id": "$.payment.payment_id?",
        "coupon": "$.coupon?",
        "currency": "EUR",
        "price": "$$9.99",
        "count": 3,
        "express": False,
        "nothing": None,
        "first": {"sku": "$.items[0].sku", "tags": ["$.order_id", "$$", "plain", 1]},
        "everything": "$",
    }
    assert render_template(template, DATA) == {
        "order_id": "o-1",
        "payment_id": "p-9",
        "coupon": None,
        "currency": "EUR",
        "price": "$9.99",
        "count": 3,
        "express": False,
        "nothing": None,
        "first": {"sku": "a", "tags": ["o-1", "$", "plain", 1]},
        "everything": DATA,
    }


def test_render_template_missing_required_path() -> None:
    with pytest.raises(MissingPath, match=r"\$\.customer_id"):
        render_template({"customer": {"id": "$.customer_id"}}, DATA)
