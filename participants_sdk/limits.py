"""What saga data may hold: JSON that MongoDB (and every server speaking its protocol) can store.

Valid JSON is not always storable. Saga data (a start's data, a reply body kept with `save_as`)
must also keep to these rules, checked where it enters so that it is refused with a reason
instead of failing every save as if the store were down:

- object keys do not start with `$` and hold no `.` or NUL (MongoDB field names);
- numbers are finite (JSON's `1e400` reads as infinity) and integers fit in 64 bits;
- strings and keys are valid Unicode (JSON's `"\\ud800"` escape reads as a lone surrogate, which
  no UTF-8 encoder accepts);
- nesting is at most `MAX_DEPTH` levels, and the whole at most `MAX_DATA_BYTES` as JSON.

`unstorable(value)` returns the first problem found as a reason naming where it is (a JSON path
such as `$.items[2].price`), or None.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from participants_sdk.headers import describe

MAX_DEPTH: Final = 32
"""Levels of objects and arrays in one value. MongoDB allows 100 in a whole document; a saga
document nests data a few levels down, and command payloads copy parts of it."""
MAX_DATA_BYTES: Final = 2 * 1024 * 1024
"""A saga's data as JSON, at most. A saga document holds its data, its commands' payloads and
its history, and MongoDB's limit for a document is 16 MiB."""
_INT64: Final = (-(2**63), 2**63 - 1)


class UnstorableData(ValueError):
    """Data the store cannot hold; the message says what and where."""


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"key {describe(key)} is not a string"
    if key.startswith("$"):
        return f"key {describe(key)} starts with '$'"
    if "." in key:
        return f"key {describe(key)} contains '.'"
    if "\x00" in key:
        return f"key {describe(key)} contains a NUL character"
    if not _valid_unicode(key):
        return f"key {describe(key)} holds a lone surrogate (not valid Unicode)"
    return None


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _child(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if text.isidentifier() and len(text) <= 40:
        return f"{path}.{text}"
    return f"{path}[{describe(text, 40)}]"


def _scalar_problem(item: object) -> str | None:
    if isinstance(item, bool) or item is None:
        return None
    if isinstance(item, int):
        inside = _INT64[0] <= item <= _INT64[1]
        return None if inside else f"integer {describe(item)} does not fit in 64 bits"
    if isinstance(item, float):
        return None if math.isfinite(item) else f"number {item} is not finite"
    if isinstance(item, str):
        return None if _valid_unicode(item) else f"string {describe(item)} holds a lone surrogate"
    return f"{type(item).__name__} is not a JSON value"


def unstorable(value: Any, *, path: str = "$") -> str | None:  # noqa: ANN401 - JSON data
    """The first reason `value` cannot be stored, or None when it can."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return f"{where}: nested deeper than {MAX_DEPTH} levels"
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(item, dict) and (problem := _key_problem(key)) is not None:
                    return f"{where}: {problem}"
                stack.append((child, _child(where, key), depth + 1))
        elif (problem := _scalar_problem(item)) is not None:
            return f"{where}: {problem}"
    return None


def json_size(value: Any) -> int:  # noqa: ANN401 - JSON data
    """Bytes of `value` as compact JSON (what the size limit counts)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_storable(value: Any, what: str) -> None:  # noqa: ANN401 - JSON data
    """Raise `UnstorableData` naming `what` when `value` cannot be stored."""
    problem = unstorable(value)
    if problem is None and (size := json_size(value)) > MAX_DATA_BYTES:
        problem = f"$: {size} bytes as JSON, more than the limit of {MAX_DATA_BYTES}"
    if problem is not None:
        raise UnstorableData(f"{what} cannot be stored: {problem}")
