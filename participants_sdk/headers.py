"""Reading AMQP header values and properties the way every Sagawire process reads them.

Header values arrive in whatever AMQP type the sender's client chose: Python's clients send
booleans and integers as such, Go, Node and Java clients often as strings, some as byte arrays.
One rule set, shared by the orchestrator and the participant SDK:

- text: a string, or a byte array / long string whose bytes are valid UTF-8;
- integer: an integer of any width (not a boolean), or a plain decimal string (`-?[0-9]+`, ASCII
  digits only, at most 19 of them: no spaces, signs other than `-`, fractions or other digits);
- boolean: a boolean, the integers 0 and 1, or the strings `true`, `false` (any case), `1`, `0`.

Anything else raises `HeaderError` with a reason that names the header and shows a bounded
excerpt of the value, never the whole of it. Reasons that go into dead-letter headers are cut to
`MAX_REASON_BYTES` by `bounded`.
"""

from __future__ import annotations

import re
from typing import Any, Final

MAX_REASON_BYTES: Final = 900
"""Longest reason Sagawire writes into a dead-letter header, in UTF-8 bytes."""
MAX_ECHO_CHARS: Final = 60
"""Longest excerpt of a foreign value quoted in a reason."""

_DECIMAL: Final = re.compile(r"-?[0-9]{1,19}", re.ASCII)
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})


_TRACEPARENT: Final = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<parent>[0-9a-f]{16})-[0-9a-f]{2}"
    r"(?P<rest>-.*)?",
    re.ASCII | re.DOTALL,
)
MAX_TRACEPARENT_CHARS: Final = 512
"""A traceparent of a later version may carry more fields; none is anywhere near this long."""


def valid_traceparent(value: object) -> str | None:
    """`value` if it is a W3C `traceparent` Sagawire passes on, else None.

    Version 00 is exactly `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; a later
    version (not `ff`) may add fields after those, which are kept as they are. Trace and parent
    ids of all zeros are invalid. Lower-case hexadecimal only, as the specification says.
    """
    if not isinstance(value, str) or len(value) > MAX_TRACEPARENT_CHARS:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None or match["version"] == "ff":
        return None
    if match["version"] == "00" and match["rest"] is not None:
        return None
    if set(match["trace"]) == {"0"} or set(match["parent"]) == {"0"}:
        return None
    return value


class HeaderError(ValueError):
    """A header or property whose value breaks the rules above; the message says which."""


def bounded(text: str, max_bytes: int = MAX_REASON_BYTES) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes (at a character boundary), marked `...`."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= max_bytes:
        return text
    cut = encoded[: max_bytes - 3].decode("utf-8", errors="ignore")
    return cut + "..."


def describe(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """A short, safe picture of a foreign value for a reason: a bounded excerpt of its repr,
    with its type named where the repr does not show it (`' 1'`, `b'\\xff'`, `float 1.0`)."""
    if isinstance(value, bytes | bytearray):
        excerpt, size = repr(bytes(value[:limit])), len(value)
        if isinstance(value, bytearray):
            excerpt = f"bytearray {excerpt}"
    elif isinstance(value, str):
        excerpt, size = repr(value[:limit]), len(value)
    else:
        whole = repr(value)
        excerpt, size = f"{type(value).__name__} {whole[:limit]}", len(whole)
    if size > limit:
        return f"{excerpt}... ({size} long)"
    return excerpt


def _as_text(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HeaderError(
                f"header {name} is not valid UTF-8 (byte {exc.start}): {describe(value)}"
            ) from None
    raise HeaderError(f"header {name} must be a string, got {describe(value)}")


def text_value(name: str, value: object) -> str:
    """The text of a header value (see the module docstring)."""
    text = _as_text(name, value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HeaderError(f"header {name} holds a lone surrogate: {describe(value)}") from None
    return text


def int_value(name: str, value: object) -> int:
    """The integer of a header value (see the module docstring)."""
    if isinstance(value, bool):
        raise HeaderError(f"header {name} must be an integer, got {describe(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str | bytes | bytearray):
        text = _as_text(name, value)
        if _DECIMAL.fullmatch(text):
            return int(text)
    raise HeaderError(
        f"header {name} must be an integer or a decimal string, got {describe(value)}"
    )


def bool_value(name: str, value: object) -> bool:
    """The truth of a header value (see the module docstring)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value in (0, 1):
            return bool(value)
    elif isinstance(value, str | bytes | bytearray):
        text = _as_text(name, value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise HeaderError(f"header {name} must be a boolean (true/false/1/0), got {describe(value)}")


def get_text(headers: dict[str, Any], name: str) -> str | None:
    value = headers.get(name)
    return None if value is None else text_value(name, value)


def get_int(headers: dict[str, Any], name: str) -> int | None:
    value = headers.get(name)
    return None if value is None else int_value(name, value)


def get_bool(headers: dict[str, Any], name: str, *, default: bool = False) -> bool:
    value = headers.get(name)
    return default if value is None else bool_value(name, value)


def display(value: object) -> str:
    """Any header value as text for people (the DLQ tools): lenient, never raises."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


JSON_MEDIA_TYPE: Final = "application/json"
_IDENTITY: Final = frozenset({"", "identity"})


def check_json_content(content_type: str | None, content_encoding: str | None) -> None:
    """Refuse a body that is not plain JSON in UTF-8 by its properties, with the reason.

    `application/json` may carry parameters; a `charset` must be UTF-8. No content type at all is
    taken as JSON (many clients set none). A `content_encoding` other than identity (gzip, say)
    is refused: the body would be read as what it is not.
    """
    if content_encoding is not None and content_encoding.strip().lower() not in _IDENTITY:
        raise HeaderError(
            f"content encoding {describe(content_encoding)} is not supported; "
            "send the JSON body unencoded (identity)"
        )
    if not content_type:
        return
    media, *params = (part.strip() for part in content_type.split(";"))
    if media.lower() != JSON_MEDIA_TYPE:
        raise HeaderError(f"content type {describe(content_type)} is not {JSON_MEDIA_TYPE}")
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise HeaderError(f"content type {describe(content_type)}: the body must be UTF-8 JSON")
