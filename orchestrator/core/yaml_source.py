"""YAML for machine definitions: safe, strict about duplicate keys, and YAML 1.2 booleans.

PyYAML follows YAML 1.1, where `on`, `off`, `yes` and `no` are booleans; a machine's `on:` block
would silently become `True:`. Only `true` and `false` are booleans here.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class YamlProblem(ValueError):
    """A YAML syntax problem or a duplicate key, with the line it is on."""

    def __init__(self, message: str, line: int | None) -> None:
        self.line = line
        super().__init__(message if line is None else f"line {line}: {message}")


class _StrictLoader(yaml.SafeLoader):
    pass


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:  # noqa: FBT001, FBT002, ANN401 - PyYAML's constructor signature
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise YamlProblem(
                f"a key must be a plain value, not {type(key).__name__}", line
            ) from None
        if key in seen:
            raise YamlProblem(f"duplicate key {key!r} (first defined on line {seen[key]})", line)
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_documents(text: str) -> list[Any]:
    """Every YAML document in `text` (several versions of a machine may share a file)."""
    try:
        return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise YamlProblem(
            str(exc.problem or exc), None if mark is None else mark.line + 1
        ) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(str(exc), None) from None
