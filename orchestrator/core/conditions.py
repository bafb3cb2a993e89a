"""Conditions of `choice` states: comparisons on saga data with all / any / not. No eval.

Kinds of values are never mixed silently (DESIGN.md invariant 13). The literal of gt/gte/lt/lte is
a number, or a date written 'YYYY-MM-DD' (such dates order as text exactly as in time); any other
literal refuses the definition. At run time, a saga value of another kind than the literal (a
string or a boolean against a number, a list against a string) raises `ConditionTypeError`, and the
saga fails for an operator instead of taking the default branch. `true` is not `1` here, unlike in
Python. A missing path, or null, is no match and no error: `exists` is the test for those.
"""

from __future__ import annotations

import datetime as dt
import difflib
import operator
import re
from typing import Any, Final, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.core.paths import DataPath, MissingPath, parse_path
from participants_sdk.headers import describe

_ORDERINGS: Final = ("gt", "gte", "lt", "lte")
_COMPARISONS: Final = ("equals", "not_equals", *_ORDERINGS, "exists", "in")
_COMBINATORS: Final = ("all", "any", "not")
_KEYS: Final = ("path", *_COMPARISONS, *_COMBINATORS)
_PYTHON_NAMES: Final = ("in_", "not_")  # accepted too: the model populates by field name
_ORDER: Final = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
_ORDERS_WHAT: Final = "gt/gte/lt/lte compare numbers (or dates written 'YYYY-MM-DD')"
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER_TEXT: Final = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_SHOWN_CHARS: Final = 80
# The first match wins: bool is a subclass of int.
_KINDS: Final[tuple[tuple[Any, str], ...]] = (
    (bool, "boolean"),
    (int | float, "number"),
    (str, "string"),
    (list | tuple, "list"),
    (dict, "object"),
)

# Names of the operators that authors bring from SQL, query languages and code; difflib cannot
# see that `greater_than` means `gt`.
_SPELLINGS: Final = {
    **dict.fromkeys(("=", "==", "eq", "is", "equal_to"), "equals"),
    **dict.fromkeys(("!=", "<>", "ne", "neq", "is_not", "not_equal_to"), "not_equals"),
    **dict.fromkeys((">", "greater_than", "greater", "above", "more_than"), "gt"),
    **dict.fromkeys(
        (">=", "ge", "greater_than_or_equal", "greater_or_equal", "at_least", "min"), "gte"
    ),
    **dict.fromkeys(("<", "less_than", "less", "below", "lower_than", "fewer_than"), "lt"),
    **dict.fromkeys(("<=", "le", "less_than_or_equal", "less_or_equal", "at_most", "max"), "lte"),
    **dict.fromkeys(("has", "present", "defined", "is_set"), "exists"),
    **dict.fromkeys(("one_of", "is_in", "isin", "within"), "in"),
    **dict.fromkeys(("and", "all_of"), "all"),
    **dict.fromkeys(("or", "any_of"), "any"),
    **dict.fromkeys(("field", "key", "jsonpath"), "path"),
}


STORED_SNAPSHOT = "stored_snapshot"
"""Validation context key: the definition is a snapshot read back from the store."""


class ConditionTypeError(ValueError):
    """A comparison met saga data of another kind than its literal: never a silent false."""


def key_suggestion(word: str) -> str:
    """` (did you mean 'gt'?)` for a misspelt or foreign name of a condition key, else ''."""
    normal = word.strip().lower().replace("-", "_").replace(" ", "_")
    close = _SPELLINGS.get(normal) or next(
        iter(difflib.get_close_matches(normal, _KEYS, n=1, cutoff=0.6)), None
    )
    return f" (did you mean '{close}'?)" if close else ""


class Condition(BaseModel):
    """Either one comparison on `path`, or a combination (`all`, `any`, `not`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    path: str | None = None
    equals: Any = None
    not_equals: Any = None
    gt: float | str | None = None
    gte: float | str | None = None
    lt: float | str | None = None
    lte: float | str | None = None
    exists: bool | None = None
    in_: list[Any] | None = Field(default=None, alias="in")
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(default=None, alias="not")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:  # noqa: ANN401 - what the definition holds
        # Checked here rather than by `extra="forbid"` alone, to suggest condition keys only:
        # inside `when:`, `gto` means `gt`, not a state's `goto`.
        if isinstance(data, dict):
            unknown = [str(key) for key in data if key not in (*_KEYS, *_PYTHON_NAMES)]
            if unknown:
                found = "; ".join(f"unknown field '{key}'{key_suggestion(key)}" for key in unknown)
                raise ValueError(
                    f"{found}; a condition takes 'path' and one of {', '.join(_COMPARISONS)}, "
                    f"or one of {', '.join(_COMBINATORS)}"
                )
        return data

    @field_validator(*_ORDERINGS, mode="before")
    @classmethod
    def _orderable(cls, value: Any, info: ValidationInfo) -> Any:  # noqa: ANN401
        if isinstance(info.context, dict) and info.context.get(STORED_SNAPSHOT):
            # A version stored before this check: sagas run on it, so it loads as it was, and
            # a comparison it cannot make fails its saga at run time (ConditionTypeError).
            return value
        return _ordering_literal(str(info.field_name), value)

    @model_validator(mode="after")
    def _one_test(self) -> Self:
        combinators = [n for n in ("all", "any", "not_") if getattr(self, n) is not None]
        comparisons = self._set_comparisons()
        if combinators and (comparisons or self.path is not None):
            raise ValueError("a condition is either a comparison on 'path' or one of all/any/not")
        if len(combinators) > 1:
            raise ValueError("use one of all/any/not per condition; nest them to combine")
        if not combinators:
            if self.path is None:
                raise ValueError("a comparison needs 'path', e.g. {path: $.total, gt: 100}")
            parse_path(self.path)
            if len(comparisons) != 1:
                raise ValueError(
                    f"a comparison needs exactly one of {', '.join(_COMPARISONS)}; "
                    f"got {', '.join(comparisons) or 'none'}"
                )
            # `in: null` and `exists: null` would never match: a silent false, refused.
            if comparisons[0] == "in" and self.in_ is None:
                raise ValueError("in: null is not a list; write in: [a, b]")
            if comparisons[0] == "exists" and self.exists is None:
                raise ValueError("exists: null is neither true nor false; write exists: true")
        return self

    def _set_comparisons(self) -> list[str]:
        found = []
        for name in _COMPARISONS:
            attr = "in_" if name == "in" else name
            # `equals: null` is a real test, so "set" means written in the definition.
            if attr in self.model_fields_set:
                found.append(name)
        return found

    def evaluate(self, data: dict[str, Any]) -> bool:
        """Whether `data` meets the condition; `ConditionTypeError` when kinds do not compare."""
        if self.all is not None:
            return all(c.evaluate(data) for c in self.all)
        if self.any is not None:
            return any(c.evaluate(data) for c in self.any)
        if self.not_ is not None:
            return not self.not_.evaluate(data)
        path: DataPath = parse_path(self.path or "$")
        if self.exists is not None:
            return path.exists(data) == self.exists
        try:
            value = path.resolve(data)
        except MissingPath:
            return False
        return self._compare(value)

    def _compare(self, value: Any) -> bool:  # noqa: ANN401 - JSON data
        if "equals" in self.model_fields_set:
            return self._equal("equals", self.equals, value)
        if "not_equals" in self.model_fields_set:
            return not self._equal("not_equals", self.not_equals, value)
        if self.in_ is not None:
            if value is not None:
                kinds = {_kind(item) for item in self.in_ if item is not None}
                if kinds and _kind(value) not in kinds:
                    wanted = " or ".join(_a_kind(kind) for kind in sorted(kinds))
                    raise self._mismatch("in", self.in_, wanted, value)
            return any(_same(item, value) for item in self.in_)
        for name in _ORDERINGS:
            bound = getattr(self, name)
            if bound is not None:
                return self._order(name, bound, value)
        return False

    def _equal(self, name: str, literal: Any, value: Any) -> bool:  # noqa: ANN401
        # Null against anything is a plain answer: it is how a value's absence is tested.
        if literal is not None and value is not None and _kind(literal) != _kind(value):
            raise self._mismatch(name, literal, _a_kind(_kind(literal)), value)
        return _same(literal, value)

    def _order(self, name: str, bound: float | str, value: Any) -> bool:  # noqa: ANN401
        if value is None:
            return False  # null is no value, as a missing path is
        if isinstance(bound, str):
            if not (isinstance(value, str) and _is_date(value)):
                got = "a string that is not a date 'YYYY-MM-DD'" if isinstance(value, str) else None
                raise self._mismatch(name, bound, "a date", value, got)
        elif _kind(value) != "number":
            raise self._mismatch(name, bound, "a number", value)
        return bool(_ORDER[name](value, bound))

    def _mismatch(
        self,
        name: str,
        literal: Any,  # noqa: ANN401
        wanted: str,
        value: Any,  # noqa: ANN401
        got: str | None = None,
    ) -> ConditionTypeError:
        return ConditionTypeError(
            f"{self.path} {name} {_show(literal)} compares {wanted} with "
            f"{got or _a_kind(_kind(value))}: the saga holds {describe(value)}"
        )


def _ordering_literal(name: str, value: object) -> object:
    """The literal of gt/gte/lt/lte as written, if it is a number or a date; else ValueError."""
    if isinstance(value, dt.datetime):  # an unquoted YAML timestamp
        message = f"{name}: {value.isoformat()} is a date-time; {_ORDERS_WHAT}"
        raise ValueError(message)  # noqa: TRY004 - pydantic reports ValueError, not TypeError
    if isinstance(value, dt.date):  # an unquoted YAML date
        return value.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value != value:  # noqa: PLR0124 - NaN, the one value unequal to itself
            raise ValueError(f"{name}: .nan is not a number that compares; {_ORDERS_WHAT}")
        return value
    if isinstance(value, str):
        if _is_date(value):
            return value
        number = value.strip()
        hint = f"; write {name}: {number}" if _NUMBER_TEXT.fullmatch(number) else ""
        raise ValueError(f"{name}: {value!r} is a string; {_ORDERS_WHAT}{hint}")
    if value is None:
        raise ValueError(f"{name}: null compares nothing; {_ORDERS_WHAT}; use exists for a value")
    hint = "; use equals for true or false" if isinstance(value, bool) else ""
    raise ValueError(f"{name}: {_show(value)} is {_a_kind(_kind(value))}; {_ORDERS_WHAT}{hint}")


def _is_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _kind(value: object) -> str:
    """The JSON kind of a value: bool is not a number here, whatever Python says."""
    if value is None:
        return "null"
    return next((kind for types, kind in _KINDS if isinstance(value, types)), type(value).__name__)


def _a_kind(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _same(left: object, right: object) -> bool:
    """JSON equality: 1 equals 1.0, `true` equals no number, lists and objects compare by items."""
    kind = _kind(left)
    if kind != _kind(right):
        return False
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(_same, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    return bool(left == right)


def _show(value: object) -> str:
    """A literal as a definition writes it, bounded: 5000, 'NL', true, null, ['NL', 'BE']."""
    text = _flow(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}..."


def _flow(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, list | tuple):
        return f"[{', '.join(_flow(item) for item in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    return repr(value)
