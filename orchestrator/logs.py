"""Logging: structlog to stderr, JSON when not on a terminal, and never a password.

Any value that looks like a URL with credentials (`amqp://user:secret@host/`) is rewritten to
`amqp://user:***@host/` before a line is written, whichever key or message it is in.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

from participants_sdk.redaction import redact

__all__ = ["redact", "setup_logging"]


def _redact_value(value: Any) -> Any:  # noqa: ANN401 - log values are anything
    if isinstance(value, str):
        return redact(value) if "@" in value else value
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _redact_processor(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        event_dict[key] = _redact_value(value)
    return event_dict


def _redact_rendered(_logger: object, _method: str, rendered: str) -> str:
    # Tracebacks are rendered last; they may quote a URL from an exception message.
    return redact(rendered) if "@" in rendered else rendered


class _Stderr:
    """Whatever `sys.stderr` is when a line is written. Loggers are cached on first use: one
    bound to the stderr of that moment would go on writing there after it was replaced (a
    command run in-process, as tests do, replaces it and closes the old one)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def setup_logging(
    level: str = "INFO", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog once for a process. `json=None`: JSON unless stderr is a terminal."""
    stream = stream or cast("TextIO", _Stderr())
    if json is None:
        json = not stream.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
    ]
    if json:
        processors.append(structlog.processors.format_exc_info)
    processors += [renderer, _redact_rendered]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    _route_stdlib_logging(stream, processors[:-2], renderer, level)


def _route_stdlib_logging(
    stream: TextIO,
    processors: list[Any],
    renderer: Any,  # noqa: ANN401 - a JSON or console renderer
    level: str,
) -> None:
    """Libraries (aio-pika, PyMongo) log through `logging`: same format, same redaction.

    They log at WARNING and above only, whatever the level of Sagawire's own lines: their
    INFO lines (reconnect attempts) repeat what Sagawire says itself.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
                _redact_rendered,  # type: ignore[list-item] # structlog's type omits str -> str
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
