"""Conditions of `choice` states: comparisons on saga data with all / any / not. No eval."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.core.paths import DataPath, MissingPath, parse_path

_COMPARISONS = ("equals", "not_equals", "gt", "gte", "lt", "lte", "exists", "in")


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

    def _compare(self, value: Any) -> bool:  # noqa: ANN401, PLR0911 - JSON data; one return per test
        if "equals" in self.model_fields_set:
            return bool(value == self.equals)
        if "not_equals" in self.model_fields_set:
            return bool(value != self.not_equals)
        if self.in_ is not None:
            return value in self.in_
        for name, op in (
            ("gt", float.__gt__),
            ("gte", float.__ge__),
            ("lt", float.__lt__),
            ("lte", float.__le__),
        ):
            bound = getattr(self, name)
            if bound is None:
                continue
            if isinstance(bound, str) or isinstance(value, str):
                # Strings compare as strings (ISO dates, codes); mixed types never match.
                if isinstance(bound, str) and isinstance(value, str):
                    return bool(
                        {
                            "gt": value > bound,
                            "gte": value >= bound,
                            "lt": value < bound,
                            "lte": value <= bound,
                        }[name]
                    )
                return False
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            return bool(op(float(value), float(bound)))
        return False
