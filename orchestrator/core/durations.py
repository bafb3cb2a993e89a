"""Durations in machine definitions: `250ms`, `30s`, `5m`, `1h30m`, or a number of seconds."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import BeforeValidator

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds in a duration; a clear ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected e.g. '30s', '5m', '1h30m'")  # noqa: TRY004 - pydantic reports ValueError
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(
                f"invalid duration {value!r}: expected a number with a unit (ms, s, m, h, d), "
                "e.g. '30s', '5m', '1h30m'"
            )
    else:
        raise ValueError(f"invalid duration {value!r}: expected e.g. '30s', '5m', '1h30m'")  # noqa: TRY004
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    if seconds < 3600 or seconds % 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


Duration = Annotated[float, BeforeValidator(parse_duration)]


def time_or_age(text: str, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 time (UTC unless it says otherwise) or an age, written as machine files write
    durations (90s, 15m, 1h30m, 7d): that long before `now`. ValueError for anything else."""
    try:
        return now - dt.timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text[:40]!r}: give an ISO time (2030-01-31T12:00:00) or an age (90s, 15m, 1h30m, 7d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
