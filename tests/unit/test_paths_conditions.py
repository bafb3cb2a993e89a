"""Durations, `$.path` references, choice conditions and input templates: pure functions."""

from __future__ import annotations

import datetime as dt
import operator
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.core.conditions import Condition, ConditionTypeError
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
        ({"path": "$.missing", "gt": 0}, False),
        ({"path": "$.missing", "lt": 0}, False),
        ({"path": "$.payment.refunded", "gt": 0}, False),
        ({"path": "$.payment.missing?", "lte": 0}, False),
        ({"path": "$.day", "gte": "2024-05-01"}, True),
        ({"path": "$.total", "equals": 120.0}, True),
        ({"path": "$.flag", "equals": True}, True),
        ({"path": "$.items[1]", "equals": {"qty": 1, "sku": "b"}}, True),
        ({"path": "$.items[1]", "equals": {"qty": True, "sku": "b"}}, False),
        ({"path": "$.payment.refunded", "not_equals": 5}, True),
        ({"path": "$.total", "in": [1, "x", 120]}, True),
        ({"path": "$.total", "in": [None, 3]}, False),
        ({"path": "$.payment.refunded", "in": [None]}, True),
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
        ({"path": "$.total", "matches": ".*"}, "unknown field 'matches'; a condition takes"),
        (
            {"path": "$.total", "greater_than": 1},
            r"unknown field 'greater_than' \(did you mean 'gt'\?\)",
        ),
        ({"path": "$.total", "gt": "100"}, "gt: '100' is a string; .* write gt: 100"),
        ({"path": "$.total", "gte": "2024-02-30"}, "gte: '2024-02-30' is a string"),
        ({"path": "$.total", "lt": True}, "lt: true is a boolean; .*use equals"),
        ({"path": "$.total", "lte": None}, "lte: null compares nothing"),
        ({"path": "$.total", "gt": [1]}, r"gt: \[1\] is a list"),
        ({"path": "$.total", "gt": {"a": 1}}, r"gt: \{a: 1\} is an object"),
        ({"path": "$.total", "gt": float("nan")}, "gt: .nan is not a number"),
        ({"path": "$.total", "in": None}, "in: null is not a list"),
        ({"path": "$.total", "exists": None}, "exists: null is neither"),
    ],
)
def test_invalid_conditions(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Condition.model_validate(spec)


# -- kinds that do not compare (DESIGN.md invariant 13) ----------------------------------------

# One value of each JSON kind; the same number shows as a string, a boolean, a list, an object.
KINDS: dict[str, Any] = {
    "a number": 9000,
    "a string": "9000",
    "a boolean": True,
    "a list": [9000],
    "an object": {"amount": 9000},
}
EXCERPTS = {
    "a number": "int 9000",
    "a string": "'9000'",
    "a boolean": "bool True",
    "a list": "list [9000]",
    "an object": "dict {'amount': 9000}",
}
ORDERINGS = ("gt", "gte", "lt", "lte")


def mismatch_cases() -> list[Any]:
    cases = []
    for op in ORDERINGS:
        for literal, wanted in ((5000, "a number"), ("2024-01-01", "a date")):
            for kind in KINDS:
                if wanted == "a number" and kind == "a number":
                    continue
                date_text = wanted == "a date" and kind == "a string"
                got = "a string that is not a date 'YYYY-MM-DD'" if date_text else kind
                cases.append(
                    pytest.param(op, literal, wanted, kind, got, id=f"{op}-{wanted}-{kind}")
                )
    for op in ("equals", "not_equals", "in"):
        for wanted, literal in KINDS.items():
            for kind in KINDS:
                if kind != wanted:
                    written = [literal] if op == "in" else literal
                    cases.append(
                        pytest.param(op, written, wanted, kind, kind, id=f"{op}-{wanted}-{kind}")
                    )
    return cases


@pytest.mark.parametrize(("op", "literal", "wanted", "kind", "got"), mismatch_cases())
def test_mismatched_kinds_raise_naming_path_operator_literal_and_value(
    op: str, literal: Any, wanted: str, kind: str, got: str
) -> None:
    condition = Condition.model_validate({"path": "$.amount", op: literal})
    with pytest.raises(ConditionTypeError) as caught:
        condition.evaluate({"amount": KINDS[kind]})
    message = str(caught.value)
    assert message.startswith(f"$.amount {op} ")
    assert f"compares {wanted} with {got}: the saga holds {EXCERPTS[kind]}" in message
    for combined in (
        {"all": [{"path": "$.amount", op: literal}]},
        {"not": {"path": "$.amount", op: literal}},
    ):
        with pytest.raises(ConditionTypeError):
            Condition.model_validate(combined).evaluate({"amount": KINDS[kind]})


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ({"path": "$.amount", "gt": 5000}, "$.amount gt 5000 compares a number with a string"),
        ({"path": "$.amount", "lte": 0.5}, "$.amount lte 0.5 compares"),
        ({"path": "$.amount", "equals": None}, None),
        ({"path": "$.amount", "in": ["NL", 1]}, None),
        ({"path": "$.amount", "in": ["NL", "BE"]}, None),
        ({"path": "$.amount", "in": [1, 2]}, "$.amount in [1, 2] compares a number with a string"),
        ({"path": "$.amount", "in": [True, 2]}, "compares a boolean or a number with a string"),
        ({"path": "$.amount", "in": []}, None),
        ({"path": "$.amount", "in": [None]}, None),
    ],
)
def test_what_the_message_shows_and_what_is_no_mismatch(
    spec: dict[str, Any], shown: str | None
) -> None:
    condition = Condition.model_validate(spec)
    if shown is None:
        assert condition.evaluate({"amount": "9000"}) is False
        return
    with pytest.raises(ConditionTypeError, match=re.escape(shown)):
        condition.evaluate({"amount": "9000"})


def test_a_long_saga_value_is_shown_bounded() -> None:
    condition = Condition.model_validate({"path": "$.note", "gt": 1})
    with pytest.raises(ConditionTypeError) as caught:
        condition.evaluate({"note": "x" * 10_000})
    assert len(str(caught.value)) < 200
    assert "(10000 long)" in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ({"equals": 1}, True),
        ({"equals": 0}, False),
        ({"not_equals": 1}, True),
        ({"equals": True}, 1),
        ({"in": [0, 1]}, False),
        ({"in": [True]}, 1),
        ({"gt": 0}, True),
        ({"lt": 1}, False),
    ],
)
def test_true_is_not_one(spec: dict[str, Any], value: object) -> None:
    """Python says True == 1; a saga's boolean never stands in for a number, nor the reverse."""
    with pytest.raises(ConditionTypeError, match="boolean"):
        Condition.model_validate({"path": "$.v", **spec}).evaluate({"v": value})


@pytest.mark.parametrize("op", [*ORDERINGS, "equals", "not_equals", "in"])
@pytest.mark.parametrize("data", [{}, {"amount": None}], ids=["missing", "null"])
def test_missing_or_null_is_no_match_and_no_error(op: str, data: dict[str, Any]) -> None:
    literal: Any = [5000] if op == "in" else 5000
    expected = op == "not_equals"
    assert Condition.model_validate({"path": "$.amount", op: literal}).evaluate(data) is (
        expected if data else False
    )


def test_dates_compare_as_dates_only() -> None:
    after = Condition.model_validate({"path": "$.day", "gt": "2024-01-31"})
    assert after.evaluate({"day": "2024-02-01"}) is True
    assert after.evaluate({"day": "2024-01-31"}) is False
    unquoted = Condition.model_validate({"path": "$.day", "gt": dt.date(2024, 1, 31)})
    assert unquoted.gt == "2024-01-31"
    for value in ("2024-02-01T00:00:00Z", "2024-2-1", "tomorrow", 20240201):
        with pytest.raises(ConditionTypeError, match=r"\$\.day gt '2024-01-31' compares a date"):
            after.evaluate({"day": value})
    with pytest.raises(ValidationError, match="is a date-time"):
        Condition.model_validate({"path": "$.day", "gt": dt.datetime(2024, 1, 31, tzinfo=dt.UTC)})


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**15), max_value=10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
NUMBERS = st.integers(min_value=-(10**15), max_value=10**15) | st.floats(
    allow_nan=False, allow_infinity=False
)
OPERATORS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


@given(value=JSON_SCALARS, literal=NUMBERS, op=st.sampled_from(sorted(OPERATORS)))
def test_an_ordering_is_numeric_or_refused_never_a_silent_false(
    value: object, literal: float, op: str
) -> None:
    condition = Condition.model_validate({"path": "$.v", op: literal})
    if value is None:  # no value, as a missing path: no match
        assert condition.evaluate({"v": value}) is False
    elif isinstance(value, int | float) and not isinstance(value, bool):
        assert condition.evaluate({"v": value}) is OPERATORS[op](value, literal)
    else:
        with pytest.raises(ConditionTypeError):
            condition.evaluate({"v": value})


@given(value=JSON_SCALARS, literal=JSON_SCALARS, negate=st.booleans())
def test_equality_is_same_kind_or_refused(value: object, literal: object, negate: bool) -> None:
    op = "not_equals" if negate else "equals"
    condition = Condition.model_validate({"path": "$.v", op: literal})

    def kind(x: object) -> type:
        return float if isinstance(x, int) and not isinstance(x, bool) else type(x)

    if value is not None and literal is not None and kind(value) is not kind(literal):
        with pytest.raises(ConditionTypeError):
            condition.evaluate({"v": value})
    else:
        equal = kind(value) is kind(literal) and value == literal
        assert condition.evaluate({"v": value}) is (equal != negate)


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
