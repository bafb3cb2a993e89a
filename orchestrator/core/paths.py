"""`$.path` references into saga data: parse once at load time, resolve without eval.

Grammar: `$` followed by `.name` or `[index]` parts; a trailing `?` makes the path optional
(it resolves to null when missing instead of failing). `$` alone is the whole of the saga data.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")


class MissingPath(LookupError):
    def __init__(self, path: DataPath) -> None:
        self.path = path
        super().__init__(f"saga data has nothing at {path.text}")


@dataclasses.dataclass(frozen=True, slots=True)
class DataPath:
    text: str
    parts: tuple[str | int, ...]
    optional: bool = False

    def resolve(self, data: dict[str, Any]) -> Any:  # noqa: ANN401 - saga data is arbitrary JSON
        node: Any = data
        for part in self.parts:
            if isinstance(part, int):
                if isinstance(node, list) and -len(node) <= part < len(node):
                    node = node[part]
                    continue
            elif isinstance(node, dict) and part in node:
                node = node[part]
                continue
            if self.optional:
                return None
            raise MissingPath(self)
        return node

    def exists(self, data: dict[str, Any]) -> bool:
        try:
            dataclasses.replace(self, optional=False).resolve(data)
        except MissingPath:
            return False
        return True

    def assign(self, data: dict[str, Any], value: Any) -> None:  # noqa: ANN401
        """Set the value at this path, creating objects on the way; only `.name` parts."""
        if not self.parts:
            raise ValueError("cannot assign to the whole of the saga data ($)")
        node = data
        for part in self.parts[:-1]:
            child = node.get(part) if isinstance(part, str) else None
            if not isinstance(child, dict):
                child = {}
                node[str(part)] = child
            node = child
        node[str(self.parts[-1])] = value


@functools.lru_cache(maxsize=4096)
def parse_path(text: str) -> DataPath:
    """Parse `$.a.b[0]`; ValueError saying what is wrong otherwise. Cached: paths are few."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise ValueError(f"invalid path {text!r}: a path starts with '$', e.g. '$.order_id'")
    optional = text.endswith("?")
    body = text[1:-1] if optional else text[1:]
    parts: list[str | int] = []
    pos = 0
    while pos < len(body):
        match = _TOKEN.match(body, pos)
        if match is None:
            raise ValueError(
                f"invalid path {text!r}: unexpected {body[pos:]!r}; use '.name' or '[index]' parts"
            )
        name, index = match.groups()
        parts.append(int(index) if index is not None else name)
        pos = match.end()
    return DataPath(text=text, parts=tuple(parts), optional=optional)


def parse_save_path(text: str) -> DataPath:
    """`save_as` targets: `payment` or `$.payment.result`; object keys only."""
    path = parse_path(text if text.startswith("$") else f"$.{text}")
    if not path.parts or any(isinstance(p, int) for p in path.parts) or path.optional:
        raise ValueError(f"invalid save_as {text!r}: name a key, e.g. 'payment' or '$.payment'")
    return path
