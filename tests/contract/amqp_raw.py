"""Hand-built AMQP 0-9-1 properties, for tests that send what no well-behaved client would.

Client libraries choose the wire type of a header value from its Python type, and refuse values
they cannot encode; a test of what Sagawire does with a foreign sender's headers has to choose
the type tag itself. Here every value is written with an explicit tag, as RabbitMQ reads it (the
RabbitMQ errata table, `pamqp.decode.TABLE_MAPPING`)::

    tag  wire value                     Python value given here
    t    boolean (octet)                bool
    b B  signed / unsigned 8 bits       int
    s u  signed / unsigned 16 bits      int
    I i  signed / unsigned 32 bits      int
    l L  signed / unsigned 64 bits      int (`L` is pamqp's; RabbitMQ's table has only `l`)
    f d  IEEE 754 32 / 64 bits          float
    D    decimal: scale octet, 32-bit   (scale, mantissa) with 0 <= mantissa < 2**32 (unsigned,
         mantissa                       as RabbitMQ reads it; pamqp reads it signed)
    S    long string                    str (UTF-8), or bytes written as they are (any bytes)
    x    byte array                     bytes
    A    field array                    a list of (tag, value) pairs
    F    field table                    a list of (key, (tag, value)) pairs, or a dict
    T    timestamp, unsigned 64 bits    int (seconds, or anything up to 2**64 - 1)
    V    void                           None

`Raw(data)` in place of a value writes `data` after the tag unchanged: a truncated value, a
length that lies, a tag no reader knows. Keys are `str` (UTF-8) or `bytes` (any bytes), and so
are the shortstr properties and the routing key given to `publish_raw_properties`.

    headers = field_table({"x-big": ("S", "a" * 100_000), "x-bad": ("S", b"\\xff\\xfe")})
    await publish_raw_properties(url, "", queue, b"{}", headers_raw=headers, message_id=b"\\xff")
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Mapping
from typing import Any, Final, Self, TypeAlias

import aiormq
import aiormq.abc
from pamqp.commands import Basic


@dataclasses.dataclass(frozen=True)
class Raw:
    """Bytes written after a type tag as they are, with no length or check added."""

    data: bytes


Field: TypeAlias = tuple[str, Any]
"""(type tag, value): one typed field value."""
Key: TypeAlias = str | bytes
Entries: TypeAlias = Mapping[Key, Field] | Iterable[tuple[Key, Field]]

_FIXED: Final = {
    "b": struct.Struct(">b"),
    "B": struct.Struct(">B"),
    "s": struct.Struct(">h"),
    "u": struct.Struct(">H"),
    "I": struct.Struct(">i"),
    "i": struct.Struct(">I"),
    "l": struct.Struct(">q"),
    "L": struct.Struct(">Q"),
    "f": struct.Struct(">f"),
    "d": struct.Struct(">d"),
    "T": struct.Struct(">Q"),
}
_LENGTH: Final = struct.Struct(">I")

SHORTSTR_PROPERTIES: Final = frozenset(
    {"content_type", "content_encoding", "correlation_id", "message_id", "message_type"}
)


def _long(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


class RawText(str):  # noqa: SLOT000 - a str subtype can have no slots of its own
    """A `str` that pamqp encodes as the bytes given, whatever they are.

    pamqp encodes a shortstr with `value.encode("utf-8")`: for the method frames aiormq builds
    itself (`Basic.Publish` and its routing key) this is the only way to put other bytes in.
    """

    raw: bytes

    def __new__(cls, raw: bytes) -> Self:
        text = super().__new__(cls, raw.decode("utf-8", errors="replace"))
        text.raw = raw
        return text

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def short_string(value: Key) -> bytes:
    """A shortstr: one length octet, then the bytes (`str` as UTF-8; at most 255 bytes)."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(data) > 255:
        raise ValueError(f"a shortstr holds at most 255 bytes, got {len(data)}")
    return bytes([len(data)]) + data


def field_value(tag: str, value: Any) -> bytes:
    """One field value: its tag, then the value encoded as that tag says."""
    if len(tag) != 1:
        raise ValueError(f"a type tag is one character, got {tag!r}")
    head = tag.encode("latin-1")
    if isinstance(value, Raw):
        return head + value.data
    return head + _payload(tag, value)


def _payload(tag: str, value: Any) -> bytes:  # noqa: PLR0911 - one branch per tag
    if tag in _FIXED:
        return _FIXED[tag].pack(value)
    if tag == "t":
        return b"\x01" if value else b"\x00"
    if tag == "D":
        scale, mantissa = value
        return struct.pack(">BI", scale, mantissa)
    if tag == "S":
        return _long(value.encode("utf-8") if isinstance(value, str) else bytes(value))
    if tag == "x":
        return _long(bytes(value))
    if tag == "A":
        return field_array(value)
    if tag == "F":
        return field_table(value)
    if tag == "V":
        return b""
    raise ValueError(f"unknown type tag {tag!r}: give its payload as Raw(bytes)")


def field_table(entries: Entries) -> bytes:
    """A field table with its length prefix, entries in the order given (duplicates kept)."""
    items = entries.items() if isinstance(entries, Mapping) else entries
    data = b"".join(short_string(key) + field_value(*field) for key, field in items)
    return _long(data)


def field_array(items: Iterable[Field]) -> bytes:
    """A field array with its length prefix."""
    return _long(b"".join(field_value(*item) for item in items))


def nested(depth: int, leaf: Field = ("V", None), *, kind: str = "F") -> Field:
    """A value `depth` tables (`kind="F"`, each under key `n`) or arrays (`"A"`) deep around
    `leaf`, built without recursion: deep enough to exhaust a recursive reader's stack."""
    if kind not in ("F", "A"):
        raise ValueError(f"kind is F or A, got {kind!r}")
    data = field_value(*leaf)
    key = short_string("n") if kind == "F" else b""
    for _ in range(depth - 1):
        data = kind.encode() + _long(key + data)
    return (kind, Raw(_long(key + data))) if depth else leaf


class RawProperties(Basic.Properties):
    """Basic.Properties where some properties are given as their encoded bytes.

    pamqp encodes each set property with `encode_property`; for the names in `raw` the bytes
    given are written instead, whatever pamqp would make of the value.
    """

    def __init__(self, raw: Mapping[str, bytes], **properties: Any) -> None:
        super().__init__(**properties)
        self.raw = dict(raw)
        for name in self.raw:
            if getattr(self, name) is None:  # pamqp writes only the properties that are set
                setattr(self, name, "raw")

    def encode_property(self, name: str, value: Any) -> bytes:
        if name in self.raw:
            return self.raw[name]
        return super().encode_property(name, value)


def raw_properties(
    *,
    headers_raw: bytes | Entries | None = None,
    delivery_mode: int | None = 2,
    **shortstrs: Key | None,
) -> RawProperties:
    """Properties whose headers are the table given (encoded, or entries to encode) and whose
    shortstr properties (`message_id`, `message_type`, ...) may be `bytes` of any content."""
    unknown = set(shortstrs) - SHORTSTR_PROPERTIES
    if unknown:
        raise ValueError(f"not shortstr properties: {sorted(unknown)}")
    raw: dict[str, bytes] = {}
    plain: dict[str, Any] = {}
    if headers_raw is not None:
        raw["headers"] = headers_raw if isinstance(headers_raw, bytes) else field_table(headers_raw)
    for name, value in shortstrs.items():
        if isinstance(value, bytes):
            raw[name] = short_string(value)
        elif value is not None:
            plain[name] = value
    return RawProperties(raw, delivery_mode=delivery_mode, **plain)


async def publish_raw_properties(  # noqa: PLR0913 - one keyword per property a test may set
    target: str | aiormq.abc.AbstractChannel,
    exchange: str,
    routing_key: Key,
    body: bytes,
    *,
    headers_raw: bytes | Entries | None = None,
    message_id: Key | None = None,
    message_type: Key | None = None,
    correlation_id: Key | None = None,
    content_type: Key | None = "application/json",
    content_encoding: Key | None = None,
    mandatory: bool = True,
) -> None:
    """Publish `body` with hand-built properties and wait for the broker's confirm.

    `target` is an AMQP URL (a connection is opened and closed for this one message) or an
    aiormq channel in confirm mode. A nack or a return raises aiormq's `DeliveryError` or
    `PublishError`; a header frame the broker will not take closes the connection instead
    (RabbitMQ 3.10 closes it for an unknown type tag, a length past the table's end, or a
    frame over frame_max), which raises an `aiormq.exceptions.AMQPConnectionError`.
    """
    properties = raw_properties(
        headers_raw=headers_raw,
        message_id=message_id,
        message_type=message_type,
        correlation_id=correlation_id,
        content_type=content_type,
        content_encoding=content_encoding,
    )
    if isinstance(routing_key, bytes):
        routing_key = RawText(routing_key)
    if not isinstance(target, str):
        await _publish(target, exchange, routing_key, body, properties, mandatory=mandatory)
        return
    connection = await aiormq.connect(target)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await _publish(channel, exchange, routing_key, body, properties, mandatory=mandatory)
    finally:
        await connection.close()


async def _publish(
    channel: aiormq.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: Basic.Properties,
    *,
    mandatory: bool,
) -> None:
    confirmation = await channel.basic_publish(
        body,
        exchange=exchange,
        routing_key=routing_key,
        properties=properties,
        mandatory=mandatory,
    )
    if isinstance(confirmation, Basic.Nack):
        raise aiormq.exceptions.DeliveryError(None, confirmation)


def entry_size(key: Key, field: Field) -> int:
    """The bytes one entry takes in an encoded table: for filling a table up to a limit."""
    return len(short_string(key)) + len(field_value(*field))
