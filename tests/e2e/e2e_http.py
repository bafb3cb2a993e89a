"""The daemon's HTTP side as the tests read it: a plain GET, and its Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families


async def http_get(port: int, path: str, *, timeout: float = 5.0) -> tuple[int, str]:  # noqa: ASYNC109
    """A plain HTTP/1.1 GET on 127.0.0.1: (status, body)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode("utf-8", errors="replace")


def metric_total(samples: Mapping[str, float], name: str) -> float:
    """The sum of every sample of `name`, whatever its labels."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {`name{label="value",...}`: value}, labels in the order written."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{label}="{value}"' for label, value in sample.labels.items())
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
