"""The document made from machines (and participants), read as a dict and checked by the parser."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncapi_validator import assert_valid
from pydantic import BaseModel

from orchestrator.asyncapi import AsyncApiError, UnknownService, asyncapi_document, unmatched
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.yaml_source import load_documents
from participants_sdk import CommandContext, Participant, Reject, protocol

ROOT = Path(__file__).resolve().parents[2]

TRIP = MachineDefinition.model_validate(
    load_documents(
        textwrap.dedent(
            """\
            machine: trip
            version: 2
            initial: book
            states:
              book:
                parallel:
                  hotel:
                    command:
                      {service: hotel, name: reserve_room, input: {trip: $.trip_id, nights: 3}}
                    compensation: {service: hotel, name: cancel_room, input: {trip: $.trip_id}}
                    on: {room_reserved: {result: done, save_as: room}, no_room: fail}
                  flight:
                    command: {service: airline, name: book_seat, input: {trip: $.trip_id}}
                    on: {seat_booked: done, sold_out: fail}
                then: confirm
              confirm:
                command: {service: hotel, name: confirm_room, input: {room: "$.room.id?"}}
                on: {room_confirmed: done, room_gone: cancel}
              cancel:
                command: {service: hotel, name: cancel_room, input: {trip: $.trip_id, why: gone}}
                on: {room_cancelled: cancelled}
              done: {final: succeeded}
              cancelled: {final: compensated}
            """
        )
    )[0]
)


def document(**options: Any) -> dict[str, Any]:
    return asyncapi_document([TRIP], version="9.9.9", **options)


def message(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return doc["components"]["messages"][key]


def test_every_service_has_a_command_and_a_reply_channel_and_there_is_a_control_channel() -> None:
    doc = document()

    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == "9.9.9"
    assert doc["defaultContentType"] == "application/json"
    assert set(doc["channels"]) == {
        "airline.commands",
        "airline.replies",
        "hotel.commands",
        "hotel.replies",
        "control",
    }
    commands = doc["channels"]["hotel.commands"]
    assert commands["address"] == protocol.command_routing_key("hotel", "{command}")
    assert commands["parameters"]["command"]["enum"] == [
        "cancel_room",
        "confirm_room",
        "reserve_room",
    ]
    assert commands["bindings"]["amqp"]["exchange"]["name"] == protocol.COMMANDS_EXCHANGE
    assert commands["bindings"]["amqp"]["exchange"]["type"] == "topic"
    assert commands["x-sagawire-queue"] == protocol.command_queue("hotel")
    replies = doc["channels"]["hotel.replies"]
    assert replies["address"] == "hotel"
    assert replies["bindings"]["amqp"]["exchange"] == {
        "name": protocol.REPLIES_EXCHANGE,
        "type": "direct",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    assert replies["x-sagawire-queue"] == protocol.reply_queue("hotel")
    control = doc["channels"]["control"]
    assert control["address"] == protocol.CONTROL_ROUTING_KEY
    assert control["bindings"]["amqp"]["exchange"]["name"] == protocol.CONTROL_EXCHANGE
    assert set(control["messages"]) == {"start", "abort", "retry", "resume"}


def test_a_participant_receives_its_commands_and_replies_with_the_events_its_steps_await() -> None:
    doc = document()

    reserve = doc["operations"]["hotel.reserve_room"]
    assert reserve["action"] == "receive"
    assert reserve["channel"] == {"$ref": "#/channels/hotel.commands"}
    assert reserve["messages"] == [{"$ref": "#/channels/hotel.commands/messages/reserve_room"}]
    assert reserve["reply"]["channel"] == {"$ref": "#/channels/hotel.replies"}
    assert reserve["reply"]["messages"] == [
        {"$ref": "#/channels/hotel.replies/messages/room_reserved"},
        {"$ref": "#/channels/hotel.replies/messages/no_room"},
    ]
    assert {op["action"] for key, op in doc["operations"].items() if "." in key} == {"receive"}
    assert {op["action"] for key, op in doc["operations"].items() if "." not in key} == {"send"}


def test_a_parallel_branchs_events_are_reply_messages_with_their_outcome() -> None:
    doc = document()

    reserved = message(doc, "hotel.reply.room_reserved")
    assert reserved["name"] == "room_reserved"
    assert reserved["bindings"]["amqp"]["messageType"] == "room_reserved"
    assert "step `book.hotel` of machine trip v2: branch done" in reserved["description"]
    assert "`room`" in reserved["payload"]["description"]  # its save_as
    assert reserved["payload"]["type"] == "object"
    assert reserved["headers"]["properties"][protocol.H_STEP]["enum"] == ["book.hotel"]
    assert set(doc["channels"]["airline.replies"]["messages"]) == {"seat_booked", "sold_out"}


def test_a_command_body_follows_its_input_template() -> None:
    payload = message(document(), "hotel.command.reserve_room")["payload"]

    assert payload["properties"]["nights"] == {"type": "integer", "const": 3}
    assert "`$.trip_id`" in payload["properties"]["trip"]["description"]
    assert payload["required"] == ["trip", "nights"]
    confirm = message(document(), "hotel.command.confirm_room")["payload"]
    assert "required" not in confirm  # `$.room.id?` is optional


def test_one_command_sent_with_two_templates_accepts_either() -> None:
    payload = message(document(), "hotel.command.cancel_room")["payload"]

    assert len(payload["anyOf"]) == 2
    assert {"why"} in [set(p["properties"]) - {"trip"} for p in payload["anyOf"]]


def test_compensates_is_a_header_of_compensations_only() -> None:
    doc = document()

    def headers(key: str) -> dict[str, Any]:
        return message(doc, key)["headers"]

    # cancel_room is a compensation in `book` and an ordinary step in `cancel`.
    assert protocol.H_COMPENSATES in headers("hotel.command.cancel_room")["properties"]
    assert protocol.H_COMPENSATES not in headers("hotel.command.cancel_room")["required"]
    assert protocol.H_COMPENSATES not in headers("hotel.command.reserve_room")["properties"]
    assert headers("hotel.command.cancel_room")["properties"][protocol.H_STEP]["enum"] == [
        "cancel",
        "compensate:book.hotel",
    ]
    for key in ("hotel.command.reserve_room", "hotel.reply.room_reserved"):
        properties = headers(key)["properties"]
        assert properties[protocol.H_VERSION]["type"] == "integer"
        assert properties[protocol.H_ATTEMPT]["type"] == "integer"
        assert properties[protocol.H_IDEMPOTENCY_KEY]["type"] == "string"
        assert properties[protocol.H_SERVICE]["const"] == "hotel"
        assert protocol.H_TRACEPARENT not in headers(key)["required"]
    assert (
        headers("hotel.reply.room_reserved")["properties"][protocol.H_REJECTED]["type"] == "boolean"
    )


def test_a_compensation_without_a_participant_may_get_any_reply() -> None:
    doc = document()

    cancel = doc["operations"]["hotel.cancel_room"]
    assert {"$ref": "#/channels/hotel.replies/messages/cancel_room.reply"} in cancel["reply"][
        "messages"
    ]
    any_reply = message(doc, "hotel.reply.cancel_room.reply")
    assert "messageType" not in any_reply["bindings"]["amqp"]
    assert any_reply["headers"]["properties"][protocol.H_STEP]["enum"] == ["compensate:book.hotel"]


class ReserveRoom(BaseModel):
    trip: str
    nights: int


class RoomReserved(BaseModel):
    room_id: str
    rate: float


class CancelRoom(BaseModel):
    trip: str
    why: str | None = None


class RoomCancelled(BaseModel):
    trip: str


def hotel() -> Participant:
    hotel = Participant("hotel")

    @hotel.command_handler("reserve_room")
    async def reserve_room(cmd: ReserveRoom, ctx: CommandContext) -> RoomReserved:
        if cmd.nights > 30:
            raise Reject("no_room", nights=cmd.nights)
        return RoomReserved(room_id="r-1", rate=90.0)

    @hotel.command_handler("cancel_room")
    async def cancel_room(cmd: CancelRoom, ctx: CommandContext) -> RoomCancelled:
        return RoomCancelled(trip=cmd.trip)

    @hotel.command_handler("clean_room")
    async def clean_room(cmd: CancelRoom, ctx: CommandContext) -> RoomCancelled:
        return RoomCancelled(trip=cmd.trip)

    return hotel


def test_a_participants_models_give_the_payloads(tmp_path: Path) -> None:
    doc = document(participants=[hotel()])
    schemas = doc["components"]["schemas"]

    assert message(doc, "hotel.command.reserve_room")["payload"] == {
        "$ref": "#/components/schemas/ReserveRoom"
    }
    assert schemas["ReserveRoom"]["properties"]["nights"]["type"] == "integer"
    reserved = message(doc, "hotel.reply.room_reserved")
    assert reserved["payload"] == {"$ref": "#/components/schemas/RoomReserved"}
    assert reserved["headers"]["properties"][protocol.H_REJECTED]["const"] is False
    no_room = message(doc, "hotel.reply.no_room")  # a Reject: no model, any properties
    assert no_room["payload"]["additionalProperties"] is True
    assert no_room["headers"]["properties"][protocol.H_REJECTED]["const"] is True
    assert protocol.H_REJECTED in no_room["headers"]["required"]
    # The compensation's handler names its reply: no stand-in for any reply.
    assert "hotel.reply.cancel_room.reply" not in doc["components"]["messages"]
    assert message(doc, "hotel.reply.room_cancelled")["payload"] == {
        "$ref": "#/components/schemas/RoomCancelled"
    }
    # No handler for confirm_room: its body still comes from the template.
    assert message(doc, "hotel.command.confirm_room")["payload"]["type"] == "object"
    assert "hotel.command.clean_room" not in doc["components"]["messages"]
    path = tmp_path / "trip.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert_valid(path)


def test_handlers_no_machine_sends_to_are_named() -> None:
    lonely = Participant("laundry")

    @lonely.command_handler("wash")
    async def wash(cmd: CancelRoom, ctx: CommandContext) -> RoomCancelled:
        return RoomCancelled(trip=cmd.trip)

    assert unmatched([TRIP], [hotel(), lonely]) == [
        "participant 'hotel': no machine sends 'clean_room'; its handler is left out",
        "participant 'laundry': no machine sends commands to this service",
    ]


def test_one_service_leaves_out_the_others_and_the_control_channel(tmp_path: Path) -> None:
    doc = document(service="airline")

    assert set(doc["channels"]) == {"airline.commands", "airline.replies"}
    assert set(doc["operations"]) == {"airline.book_seat"}
    assert all(key.startswith("airline.") for key in doc["components"]["messages"])
    assert "service airline" in doc["info"]["title"]
    path = tmp_path / "airline.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert_valid(path)


def test_an_unknown_service_names_the_known_ones() -> None:
    with pytest.raises(UnknownService, match=r"'hotle' \(did you mean 'hotel'\?\).*airline, hotel"):
        document(service="hotle")


def test_two_participants_for_one_service_are_refused() -> None:
    with pytest.raises(AsyncApiError, match="two participants for service 'hotel'"):
        document(participants=[hotel(), hotel()])


def test_the_whole_document_validates(tmp_path: Path) -> None:
    path = tmp_path / "trip.yaml"
    path.write_text(yaml.safe_dump(document()))
    assert_valid(path)


FORBIDDEN = (
    "asyncio",
    "aio_pika",
    "aiormq",
    "pymongo",
    "orchestrator.adapters",
    "orchestrator.cli",
    "orchestrator.daemon",
    "orchestrator.runtime.actor",
    "orchestrator.runtime.system",
)


def test_the_document_is_made_without_io() -> None:
    found = []
    for path in sorted((ROOT / "orchestrator" / "asyncapi").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [
                f"{path.name} imports {name}"
                for name in names
                if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
            ]
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                found.append(f"{path.name} opens a file")
    assert found == []
    assert "orchestrator.asyncapi" in sys.modules


def test_a_reply_requires_what_the_orchestrator_reads() -> None:
    required = message(document(), "hotel.reply.room_reserved")["headers"]["required"]

    assert set(required) == {
        protocol.H_SERVICE,
        protocol.H_MACHINE,
        protocol.H_STEP,
        protocol.H_VISIT,
        protocol.H_ATTEMPT,
    }


def test_control_requests_correlate_on_the_saga_id_in_their_body() -> None:
    doc = document()

    start = message(doc, "control.start")
    assert start["correlationId"]["location"] == "$message.payload#/saga_id"
    assert set(start["headers"]["properties"]) == {protocol.H_TRACEPARENT}
    assert "required" not in start["headers"]
    assert start["payload"]["allOf"][1]["properties"]["machine"]["enum"] == ["trip"]
    assert message(doc, "control.abort")["payload"] == {
        "$ref": "#/components/schemas/OperatorCommand"
    }
    assert doc["components"]["schemas"]["OperatorCommand"]["required"] == ["saga_id", "operator"]
    # Commands and replies carry the saga id in the AMQP correlation_id property, which a
    # correlationId location cannot point at.
    assert "correlationId" not in message(doc, "hotel.command.reserve_room")
    assert (
        "`correlation_id` (the saga id)"
        in message(doc, "hotel.command.reserve_room")["description"]
    )
