"""The header rules (`participants_sdk.headers`) and the data limits (`participants_sdk.limits`),
against generated values: every AMQP field type a client may send, and arbitrary JSON."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import bson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from participants_sdk import headers as h
from participants_sdk.limits import (
    MAX_DEPTH,
    UnstorableData,
    check_storable,
    unstorable,
)

# Every Python value pamqp decodes an AMQP field to.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=3, max_value=10**9, min_value=-(10**9)
    ),
    st.text(max_size=300),
    st.binary(max_size=300),
    st.binary(max_size=50).map(bytearray),
    st.datetimes(timezones=st.just(dt.UTC)),
)
FIELD_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
DIGITS = "0123456789"


def plain_decimal(text: str) -> bool:
    body = text.removeprefix("-")
    return 1 <= len(body) <= 19 and all(c in DIGITS for c in body)


def as_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


@given(FIELD_VALUES)
def test_integers_are_ints_or_plain_decimal_strings_and_nothing_else(value: Any) -> None:
    text = as_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        assert h.int_value("x-n", value) == value
    elif text is not None and plain_decimal(text):
        assert h.int_value("x-n", value) == int(text)
    else:
        with pytest.raises(h.HeaderError, match=r"^header x-n (must be an integer|is not valid)"):
            h.int_value("x-n", value)


@given(FIELD_VALUES)
def test_booleans_are_bools_zero_one_or_true_false_and_nothing_else(value: Any) -> None:
    text = as_text(value)
    if isinstance(value, bool):
        expected: bool | None = value
    elif isinstance(value, int) and value in (0, 1):
        expected = value == 1
    elif text is not None and text.lower() in ("true", "false", "1", "0"):
        expected = text.lower() in ("true", "1")
    else:
        expected = None
    if expected is None:
        with pytest.raises(h.HeaderError, match=r"^header x-b (must be a boolean|is not valid)"):
            h.bool_value("x-b", value)
    else:
        assert h.bool_value("x-b", value) is expected


@given(FIELD_VALUES)
def test_text_is_a_string_or_valid_utf8_bytes(value: Any) -> None:
    text = as_text(value)
    try:
        encodable = text is not None and bool(text.encode("utf-8") or True)
    except UnicodeEncodeError:
        encodable = False
    if not encodable:
        with pytest.raises(h.HeaderError, match=r"^header x-t "):
            h.text_value("x-t", value)
    else:
        assert h.text_value("x-t", value) == text


@given(FIELD_VALUES, st.sampled_from([h.int_value, h.bool_value, h.text_value]))
def test_every_reason_is_short_whatever_the_value(value: Any, parse: Any) -> None:
    reason = ""
    try:
        parse("x-sagawire-attempt", value)
    except h.HeaderError as exc:
        reason = str(exc)
    assert len(reason) < 300


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1),
        ("-7", -7),
        ("007", 7),
        (b"3", 3),
        (bytearray(b"12"), 12),
        (2**63, 2**63),
    ],
)
def test_integers_as_other_clients_send_them(value: object, expected: int) -> None:
    assert h.int_value("x", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        " 1",
        "1 ",
        "+1",
        "1.9",
        "1e3",
        "\u0661",
        "\uff11",
        "0x1",
        "",
        "-",
        "1_000",
        1.0,
        True,
        decimal.Decimal(1),
        "9" * 20,
        [1],
        {"n": 1},
        None,
    ],
)
def test_integer_look_alikes_are_refused(value: object) -> None:
    with pytest.raises(h.HeaderError):
        h.int_value("x", value)


@given(st.text(), st.integers(min_value=8, max_value=2000))
def test_bounded_keeps_a_prefix_within_the_byte_limit(text: str, limit: int) -> None:
    cut = h.bounded(text, limit)
    assert len(cut.encode("utf-8", errors="replace")) <= limit
    if cut != text:
        assert cut.endswith("...")
        assert text.startswith(cut[:-3])


@pytest.mark.parametrize(
    ("content_type", "content_encoding"),
    [
        ("application/json", ""),
        ("application/json; charset=utf-8", None),
        ("Application/JSON;charset=UTF-8", "identity"),
        ('application/json; charset="utf8"', ""),
        ("", ""),
        (None, None),
    ],
)
def test_json_content_accepted(content_type: str | None, content_encoding: str | None) -> None:
    h.check_json_content(content_type, content_encoding)


@pytest.mark.parametrize(
    ("content_type", "content_encoding", "reason"),
    [
        ("text/plain", "", "content type 'text/plain' is not application/json"),
        ("application/json; charset=latin-1", "", "the body must be UTF-8 JSON"),
        ("application/json", "gzip", "content encoding 'gzip' is not supported"),
        ("application/xml", "", "is not application/json"),
    ],
)
def test_json_content_refused(content_type: str, content_encoding: str, reason: str) -> None:
    with pytest.raises(h.HeaderError, match=reason):
        h.check_json_content(content_type, content_encoding)


# -- the data limits -----------------------------------------------------------------------------

SAFE_KEYS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=".\x00$"),
    max_size=10,
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SAFE_KEYS, inner, max_size=4),
    max_leaves=20,
)
POISON = st.sampled_from(
    [
        ({"a.b": 1}, "contains '.'"),
        ({"$x": 1}, "starts with '$'"),
        ({"a\x00": 1}, "NUL"),
        ({"\udc80": 1}, "lone surrogate"),
        ("\ud83d", "lone surrogate"),
        (math.inf, "not finite"),
        (-math.inf, "not finite"),
        (math.nan, "not finite"),
        (2**63, "64 bits"),
        (-(2**63) - 1, "64 bits"),
        (b"raw", "bytes is not a JSON value"),
    ]
)


@given(JSON_VALUES)
def test_json_within_the_limits_is_storable_and_the_store_can_encode_it(value: Any) -> None:
    assert unstorable({"data": value}) is None
    bson.encode({"data": value})  # the driver takes it as it is


@given(JSON_VALUES, POISON, st.randoms(use_true_random=False))
def test_one_poisoned_value_anywhere_is_found_and_named(
    value: Any, poison: tuple[Any, str], rng: Any
) -> None:
    bad, words = poison
    # Put the poison somewhere inside: replace a random container's child, or wrap.
    containers = [value] if isinstance(value, dict | list) else []
    stack = list(containers)
    while stack:
        item = stack.pop()
        children = list(item.values()) if isinstance(item, dict) else list(item)
        for child in children:
            if isinstance(child, dict | list):
                containers.append(child)
                stack.append(child)
    target = rng.choice(containers) if containers else None
    if isinstance(target, dict):
        target["k"] = bad
        root = value
    elif isinstance(target, list):
        target.append(bad)
        root = value
    else:
        root = {"k": bad}
    assert _depth(root) <= MAX_DEPTH  # by construction: 20 leaves nest at most 21 deep
    reason = unstorable(root)
    assert reason is not None
    assert words in reason
    with pytest.raises(UnstorableData, match=r"^start data cannot be stored: \$"):
        check_storable(root, "start data")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_nesting_past_the_limit_is_refused_with_its_path() -> None:
    value: Any = 1
    for _ in range(MAX_DEPTH + 1):
        value = {"n": value}
    reason = unstorable(value)
    assert reason == "$" + ".n" * MAX_DEPTH + f": nested deeper than {MAX_DEPTH} levels"


def test_size_past_the_limit_is_refused() -> None:
    with pytest.raises(UnstorableData, match="bytes as JSON, more than the limit"):
        check_storable({"pad": "x" * (3 * 1024 * 1024)}, "start data")
