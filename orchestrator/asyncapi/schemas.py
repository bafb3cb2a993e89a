"""JSON Schemas for message bodies: derived from a machine's input template, or from pydantic.

A template says what the orchestrator sends: its keys, the literals it holds and the saga data
paths it copies. A pydantic model says what a participant accepts or replies; its `$defs` move to
`components.schemas` of the AsyncAPI document, where every `$ref` then points.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel

from orchestrator.core.paths import parse_path

Schema = dict[str, Any]

COMPONENT_SCHEMAS: Final = "#/components/schemas/"
_LOCAL_DEFS: Final = "#/$defs/"


def template_schema(template: Any) -> Schema:  # noqa: ANN401 - templates are JSON
    """The body a command with this input template carries, whatever the saga data holds.

    A `$.path` may copy any JSON value, so it gives an unconstrained schema naming the path; an
    optional path (`?`) is left out of `required` (the orchestrator sends null when the saga data
    has nothing there). Literals give `const`; `$$text` is the literal `$text`.
    """
    if isinstance(template, str) and template.startswith("$") and not template.startswith("$$"):
        return _path_schema(template)
    if isinstance(template, dict):
        properties = {str(key): template_schema(value) for key, value in template.items()}
        required = [key for key, value in template.items() if not _optional_path(value)]
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return schema
    if isinstance(template, list):
        if not template:
            return {"type": "array", "maxItems": 0}
        return {
            "type": "array",
            "items": [template_schema(item) for item in template],
            "additionalItems": False,
        }
    if isinstance(template, str):
        return {"type": "string", "const": template[1:] if template.startswith("$$") else template}
    return _literal_schema(template)


def _path_schema(text: str) -> Schema:
    path = parse_path(text)
    if not path.parts:
        return {"type": "object", "description": "The whole of the saga data (`$`)."}
    where = text.removesuffix("?")
    if path.optional:
        return {
            "description": f"Copied from saga data at `{where}`; null when there is nothing there."
        }
    return {"description": f"Copied from saga data at `{where}`."}


def _optional_path(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith("$")
        and not value.startswith("$$")
        and parse_path(value).optional
    )


def _literal_schema(value: object) -> Schema:
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean", "const": value}
    if isinstance(value, int):
        return {"type": "integer", "const": value}
    if isinstance(value, float):
        return {"type": "number", "const": value}
    raise TypeError(f"not a JSON value in an input template: {type(value).__name__}")


class ComponentSchemas:
    """The `components.schemas` of a document, filled from pydantic models.

    Each model's schema and its `$defs` go in under their own names; a name already taken by a
    different schema gets a number (`Item2`), and every `$ref` is rewritten to match. A model
    added twice, or two models with the same schema, share one entry.
    """

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def model(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> Schema:
        """A `$ref` to the model's schema in the components (added if it is not there yet)."""
        schema = model.model_json_schema(mode=mode, ref_template=_LOCAL_DEFS + "{model}")
        defs: dict[str, Schema] = schema.pop("$defs", {})
        top = schema.get("$ref", "")
        if len(schema) == 1 and top.startswith(_LOCAL_DEFS):  # a model that refers to itself
            name = top.removeprefix(_LOCAL_DEFS)
        else:
            name = str(schema.get("title") or model.__name__)
            defs = {**defs, name: schema}
        names = self._add(defs)
        return {"$ref": COMPONENT_SCHEMAS + names[name]}

    def _add(self, group: dict[str, Schema]) -> dict[str, str]:
        """Add schemas that refer to each other by `#/$defs/` name; their names in components."""
        names = {name: name for name in group}
        changed = True
        while changed:  # a name changes at most once: to one free in components
            changed = False
            for name, schema in group.items():
                taken = self.schemas.get(names[name])
                if taken is not None and taken != _rewrite(schema, names):
                    names[name] = self._free_name(name, set(names.values()))
                    changed = True
        for name, schema in group.items():
            self.schemas.setdefault(names[name], _rewrite(schema, names))
        return names

    def _free_name(self, name: str, reserved: set[str]) -> str:
        number = 2
        while f"{name}{number}" in self.schemas or f"{name}{number}" in reserved:
            number += 1
        return f"{name}{number}"


def _rewrite(schema: Any, names: dict[str, str]) -> Any:  # noqa: ANN401 - JSON Schema nodes
    """A copy of `schema` whose `#/$defs/X` references point into the components."""
    if isinstance(schema, dict):
        rewritten = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_LOCAL_DEFS):
                rewritten[key] = COMPONENT_SCHEMAS + names[value.removeprefix(_LOCAL_DEFS)]
            else:
                rewritten[key] = _rewrite(value, names)
        return rewritten
    if isinstance(schema, list):
        return [_rewrite(item, names) for item in schema]
    return schema


def any_of(schemas: list[Schema]) -> Schema:
    """One schema for a body described several ways: itself when they agree, else `anyOf`."""
    distinct: list[Schema] = []
    for schema in schemas:
        if schema not in distinct:
            distinct.append(schema)
    if len(distinct) == 1:
        return distinct[0]
    return {"anyOf": distinct}


FREE_OBJECT: Final[Schema] = {"type": "object", "additionalProperties": True}
"""A body with any properties: the details of a `Reject(event, **details)`."""
