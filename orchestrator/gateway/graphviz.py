"""A machine's diagram as SVG, drawn by Graphviz's `dot` from `core.diagram.dot()`.

`dot` runs as a subprocess with a time limit, so a slow or stuck layout never holds up the
gateway's event loop. A machine version never changes once stored, so each one is drawn once
(`Diagrams` keeps them). Graphviz names each state's node by a `<title>` holding the state's
name, which is what the flow monitor finds them by.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from typing import Final

DOT_TIMEOUT: Final = 10.0
"""Seconds `dot` may take for one diagram."""
CACHED_DIAGRAMS: Final = 256


class DiagramUnavailable(Exception):
    """The SVG cannot be drawn here: `dot` is missing, failed or took too long (the message
    says which)."""


async def dot_to_svg(
    dot_text: str, *, executable: str = "dot", time_limit: float = DOT_TIMEOUT
) -> str:
    """`dot -Tsvg` of `dot_text`; `DiagramUnavailable` when that cannot be had."""
    path = shutil.which(executable)
    if path is None:
        raise DiagramUnavailable(
            f"Graphviz is not installed: {executable!r} was not found on the gateway's PATH, "
            "and the gateway draws diagrams with it (Debian: apt-get install graphviz)"
        )
    try:
        process = await asyncio.create_subprocess_exec(
            path,
            "-Tsvg",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise DiagramUnavailable(f"cannot run {path}: {exc}") from None
    try:
        out, err = await asyncio.wait_for(process.communicate(dot_text.encode()), time_limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise DiagramUnavailable(f"{path} did not finish within {time_limit:g} s") from None
    if process.returncode != 0:
        why = err.decode(errors="replace").strip()[:500] or "no message"
        raise DiagramUnavailable(f"{path} failed (exit {process.returncode}): {why}")
    return out.decode(errors="replace")


class Diagrams:
    """SVG diagrams by machine and version, each drawn once."""

    def __init__(self, *, executable: str = "dot", time_limit: float = DOT_TIMEOUT) -> None:
        self.executable = executable
        self.time_limit = time_limit
        self._drawn: dict[tuple[str, int], str] = {}
        self._lock = asyncio.Lock()

    async def svg(self, machine: str, version: int, dot_text: str) -> str:
        key = (machine, version)
        async with self._lock:  # one `dot` at a time: a page load asks for each diagram at once
            if key not in self._drawn:
                if len(self._drawn) >= CACHED_DIAGRAMS:
                    self._drawn.pop(next(iter(self._drawn)))
                self._drawn[key] = await dot_to_svg(
                    dot_text, executable=self.executable, time_limit=self.time_limit
                )
            return self._drawn[key]
