"""Frames of a delivery that pamqp cannot decode, made harmless to the connection reading them.

RabbitMQ passes on properties it does not read itself, so a message can arrive whose content
header pamqp refuses: a timestamp past the year 9999 (`T` of 2**64 - 1: "year 584556019 is out
of range"), a field-table key or a shortstr property (`message_id`, `type`, `content_type`...)
that is not UTF-8, tables nested deeper than Python's recursion limit. Likewise a routing key
that is not UTF-8 still matches a topic binding (`payment.*`), and pamqp refuses the
`Basic.Deliver` that carries it. pamqp raises, aiormq's frame reader turns that into
`InvalidFrameError` and closes the whole connection; the broker redelivers the message to the
next connection, which dies the same way: one message stops every consumer of the process.

aiormq gives no hook into its frame reader, so `install()` wraps two functions of pamqp's that
`pamqp.frame.unmarshal` looks up at each call:

- `_unmarshal_header_frame`: when pamqp raises, the wrapper reads the frame's fixed part itself
  (class id, weight, body size: the body frames that follow are still read correctly) and
  returns properties holding one header, `x-sagawire-unreadable-properties`, with the reason. A
  consumer rejects such a delivery without requeue: the queue's dead-letter exchange moves the
  untouched original bytes to its DLQ, and the DLQ tools show the reason.
- `_unmarshal_method_frame`: a `Basic.Deliver` or `Basic.GetOk` pamqp refuses is read again
  with its short strings decoded leniently (U+FFFD for bytes that are not UTF-8). Sagawire
  routes nothing by a delivery's routing key (participants dispatch on `type`), so the delivery
  is handled as any other.

A frame too short for its fixed fields is still an error of the connection, as before.
Installed when `participants_sdk.amqp` is imported. A pamqp without these functions,
or whose `unmarshal` no longer goes through them, fails that import with an `ImportError`
rather than leaving every consumer exposed again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

import pamqp.frame
from pamqp import base, decode, header
from pamqp.commands import Basic
from pamqp.exceptions import UnmarshalingException

from participants_sdk import protocol
from participants_sdk.headers import bounded

_HEADER_READER: Final = "_unmarshal_header_frame"
_METHOD_READER: Final = "_unmarshal_method_frame"
_FIXED_PART: Final = struct.Struct(">HHQ")  # class id, weight, body size
_METHOD_INDEX: Final = struct.Struct(">I")
_LENIENT_METHODS: Final[dict[int, type[base.Frame]]] = {
    Basic.Deliver.index: Basic.Deliver,
    Basic.GetOk.index: Basic.GetOk,
}
MAX_UNREADABLE_REASON_BYTES: Final = 400


class _LenientHeaders:
    """pamqp's header-frame reader; what it cannot decode becomes a marker header."""

    def __init__(self, strict: Callable[[bytes], header.ContentHeader]) -> None:
        self.strict = strict

    def __call__(self, frame_data: bytes) -> header.ContentHeader:
        try:
            return self.strict(frame_data)
        except Exception as exc:
            if len(frame_data) < _FIXED_PART.size:  # not even its fixed part: a broken stream
                raise
            class_id, weight, body_size = _FIXED_PART.unpack_from(frame_data)
            content = header.ContentHeader(
                weight,
                body_size,
                Basic.Properties(headers={protocol.H_UNREADABLE_PROPERTIES: _why(exc)}),
            )
            content.class_id = class_id
            return content


class _LenientMethods:
    """pamqp's method-frame reader; a delivery's short strings that are not UTF-8 are decoded
    leniently."""

    def __init__(self, strict: Callable[[bytes], base.Frame]) -> None:
        self.strict = strict

    def __call__(self, frame_data: bytes) -> base.Frame:
        try:
            return self.strict(frame_data)
        except Exception:
            method = _lenient_method(frame_data)
            if method is None:
                raise
            return method


def _lenient_method(frame_data: bytes) -> base.Frame | None:
    """The delivery method in `frame_data`, short strings decoded with U+FFFD for bad bytes;
    None for another method, or one that cannot be read even so."""
    if len(frame_data) < _METHOD_INDEX.size:
        return None
    kind = _LENIENT_METHODS.get(_METHOD_INDEX.unpack_from(frame_data)[0])
    if kind is None:
        return None
    method, offset = kind(), _METHOD_INDEX.size
    try:
        for name in kind.__slots__:
            wire_type = kind.amqp_type(name)
            if wire_type == "shortstr":
                end = offset + 1 + frame_data[offset]
                if end > len(frame_data):
                    return None
                value: object = frame_data[offset + 1 : end].decode("utf-8", errors="replace")
                offset = end
            elif wire_type == "bit":  # Deliver and GetOk have one bit field each: its own octet
                value, offset = bool(frame_data[offset] & 1), offset + 1
            else:
                consumed, value = decode.by_type(frame_data[offset:], wire_type)
                offset += consumed
            setattr(method, name, value)
    except (IndexError, ValueError):
        return None
    return method


def _why(exc: Exception) -> str:
    cause = exc.args[1] if isinstance(exc, UnmarshalingException) and len(exc.args) > 1 else exc
    return bounded(f"{type(cause).__name__}: {cause}", MAX_UNREADABLE_REASON_BYTES)


def unreadable(headers: dict[str, object]) -> str | None:
    """The reason a delivery's properties could not be decoded, or None when they were."""
    reason = headers.get(protocol.H_UNREADABLE_PROPERTIES)
    if reason is None:
        return None
    return bounded(str(reason), MAX_UNREADABLE_REASON_BYTES)


def _frame(frame_type: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", frame_type, 1, len(payload)) + payload + b"\xce"


def _probes() -> tuple[bytes, bytes]:
    """A header frame (a header whose type tag no reader knows) and a `Basic.Deliver` (a routing
    key that is not UTF-8) that pamqp refuses by itself."""
    table = b"\x01h" + b"Z"
    properties = struct.pack(">HI", Basic.Properties.flags["headers"], len(table)) + table
    content = _frame(2, _FIXED_PART.pack(Basic.frame_id, 0, 0) + properties)
    fields = b"\x01c" + struct.pack(">QB", 1, 0) + b"\x00" + b"\x02k\xff"
    deliver = _frame(1, _METHOD_INDEX.pack(Basic.Deliver.index) + fields)
    return content, deliver


def _works() -> bool:
    content, deliver = _probes()
    try:
        _, _, header_frame = pamqp.frame.unmarshal(content)
        _, _, method_frame = pamqp.frame.unmarshal(deliver)
    except Exception:  # noqa: BLE001 - any failure means a wrapper is not in the path
        return False
    return (
        isinstance(header_frame, header.ContentHeader)
        and isinstance(header_frame.properties.headers, dict)
        and protocol.H_UNREADABLE_PROPERTIES in header_frame.properties.headers
        and isinstance(method_frame, Basic.Deliver)
        and method_frame.routing_key == "k\ufffd"
    )


def install() -> None:
    """Wrap pamqp's readers (once); `ImportError` if pamqp changed under us."""
    namespace = vars(pamqp.frame)
    headers, methods = namespace.get(_HEADER_READER), namespace.get(_METHOD_READER)
    if headers is None or methods is None:
        raise ImportError(
            f"pamqp {pamqp.__version__} has no pamqp.frame.{_HEADER_READER} or "
            f"{_METHOD_READER}: participants_sdk reads frames it cannot decode through them "
            "(see participants_sdk/_rabbit_frames.py); use a pamqp version it supports "
            "(4.x), or update that module"
        )
    if not isinstance(headers, _LenientHeaders):
        namespace[_HEADER_READER] = _LenientHeaders(headers)
    if not isinstance(methods, _LenientMethods):
        namespace[_METHOD_READER] = _LenientMethods(methods)
    if not _works():
        raise ImportError(
            f"pamqp {pamqp.__version__}: pamqp.frame.unmarshal no longer reads frames through "
            f"{_HEADER_READER} and {_METHOD_READER}; participants_sdk/_rabbit_frames.py must "
            "be updated"
        )


install()
