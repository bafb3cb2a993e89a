"""Payload schemas: from a machine's input template, and from pydantic models into components."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import BaseModel, computed_field

from orchestrator.asyncapi.schemas import ComponentSchemas, any_of, template_schema


def test_a_template_gives_an_object_of_its_keys() -> None:
    schema = template_schema({"order_id": "$.order_id", "amount": "$.total"})

    assert schema["type"] == "object"
    assert list(schema["properties"]) == ["order_id", "amount"]
    assert schema["required"] == ["order_id", "amount"]
    assert schema["additionalProperties"] is False


def test_a_path_may_hold_any_value_and_its_description_names_the_path() -> None:
    schema = template_schema({"amount": "$.order.total"})["properties"]["amount"]

    assert "type" not in schema
    assert "const" not in schema
    assert "`$.order.total`" in schema["description"]


def test_an_optional_path_is_not_required() -> None:
    schema = template_schema({"order_id": "$.order_id", "payment_id": "$.payment.payment_id?"})

    assert schema["required"] == ["order_id"]
    assert "`$.payment.payment_id`" in schema["properties"]["payment_id"]["description"]
    assert "null" in schema["properties"]["payment_id"]["description"]


def test_only_optional_paths_leave_out_required() -> None:
    assert "required" not in template_schema({"note": "$.note?"})


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("express", {"type": "string", "const": "express"}),
        ("$$price", {"type": "string", "const": "$price"}),  # `$$x` is the literal `$x`
        (3, {"type": "integer", "const": 3}),
        (2.5, {"type": "number", "const": 2.5}),
        (True, {"type": "boolean", "const": True}),
        (False, {"type": "boolean", "const": False}),
        (None, {"type": "null"}),
    ],
)
def test_a_literal_gives_its_type_and_value(literal: object, expected: dict[str, object]) -> None:
    assert template_schema({"x": literal})["properties"]["x"] == expected


def test_nested_templates_recurse() -> None:
    schema = template_schema(
        {"order": {"id": "$.order_id", "lines": ["$.items[0]", "gift"], "note": "$.note?"}}
    )

    order = schema["properties"]["order"]
    assert order["type"] == "object"
    assert order["required"] == ["id", "lines"]
    lines = order["properties"]["lines"]
    assert lines["type"] == "array"
    assert lines["additionalItems"] is False
    assert "`$.items[0]`" in lines["items"][0]["description"]
    assert lines["items"][1] == {"type": "string", "const": "gift"}
    assert template_schema({"none": []})["properties"]["none"] == {"type": "array", "maxItems": 0}


def test_the_whole_saga_data_is_an_object() -> None:
    assert template_schema({"all": "$"})["properties"]["all"]["type"] == "object"


def test_an_empty_template_is_an_empty_object() -> None:
    assert template_schema({}) == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }


def test_any_of_keeps_one_schema_when_the_uses_agree() -> None:
    one = {"type": "object"}
    assert any_of([one, dict(one)]) == one
    assert any_of([one, {"type": "string"}]) == {"anyOf": [one, {"type": "string"}]}


class Line(BaseModel):
    sku: str
    quantity: int


class Order(BaseModel):
    order_id: str
    lines: list[Line]


class Node(BaseModel):
    name: str
    children: list[Node] = []


def _other_line() -> type[BaseModel]:
    class Line(BaseModel):  # the same name as the module's Line, other fields
        sku: str
        weight: float

    class Parcel(BaseModel):
        lines: list[Line]

    return Parcel


def _resolve(schemas: ComponentSchemas, ref: dict[str, str]) -> dict[str, object]:
    prefix = "#/components/schemas/"
    assert ref["$ref"].startswith(prefix)
    return schemas.schemas[ref["$ref"].removeprefix(prefix)]


def test_a_models_defs_move_to_the_components_and_refs_follow() -> None:
    schemas = ComponentSchemas()

    ref = schemas.model(Order, "validation")

    assert ref == {"$ref": "#/components/schemas/Order"}
    order = _resolve(schemas, ref)
    assert "$defs" not in order
    assert order["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line"}  # type: ignore[index]
    assert set(schemas.schemas) == {"Order", "Line"}


def test_a_model_added_twice_is_stored_once() -> None:
    schemas = ComponentSchemas()

    assert schemas.model(Order, "validation") == schemas.model(Order, "validation")
    assert set(schemas.schemas) == {"Order", "Line"}


def test_two_models_of_one_name_get_two_entries_and_each_ref_finds_its_own() -> None:
    schemas = ComponentSchemas()
    schemas.model(Order, "validation")

    parcel = _resolve(schemas, schemas.model(_other_line(), "validation"))

    assert set(schemas.schemas) == {"Order", "Line", "Parcel", "Line2"}
    assert parcel["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line2"}  # type: ignore[index]
    assert set(schemas.schemas["Line2"]["properties"]) == {"sku", "weight"}
    assert set(schemas.schemas["Line"]["properties"]) == {"sku", "quantity"}


def test_a_model_that_refers_to_itself() -> None:
    schemas = ComponentSchemas()

    ref = schemas.model(Node, "validation")

    node = _resolve(schemas, ref)
    assert node["properties"]["children"]["items"] == ref  # type: ignore[index]
    assert set(schemas.schemas) == {"Node"}


class Shipped(BaseModel):
    event_name: ClassVar[str] = "parcel_shipped"
    tracking: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return f"https://track.example/{self.tracking}"


def test_a_reply_is_described_as_sent_a_command_as_read() -> None:
    sent, read = ComponentSchemas(), ComponentSchemas()

    sent.model(Shipped, "serialization")
    read.model(Shipped, "validation")

    assert "url" in sent.schemas["Shipped"]["properties"]  # what model_dump() writes
    assert "url" not in read.schemas["Shipped"]["properties"]
