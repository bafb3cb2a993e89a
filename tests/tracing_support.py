"""Spans recorded in memory for a test, by the daemon and the participants alike.

The provider is handed to both tracing modules (`use_tracer_provider`), never set as the global
one: the global provider can be set once per process, and the tests that check the behaviour
without OpenTelemetry configured run in the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterator

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import orchestrator.tracing
import participants_sdk.tracing


@dataclasses.dataclass
class RecordedSpans:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.all() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        [span] = self.named(name)
        return span

    def consumers(self) -> list[ReadableSpan]:
        return [span for span in self.all() if span.kind is SpanKind.CONSUMER]

    async def wait_until(
        self,
        done: Callable[[list[ReadableSpan]], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - fails a test that waits in vain
    ) -> list[ReadableSpan]:
        """The spans, once `done(spans)`: a participant ends its span just after its ack, which
        may be after the daemon applied its reply."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(spans := self.all()):
            if loop.time() > deadline:
                names = sorted(span.name for span in spans)
                raise TimeoutError(f"spans after {timeout}s: {names}")
            await asyncio.sleep(0.01)
        return spans


@contextlib.contextmanager
def recording() -> Iterator[RecordedSpans]:
    provider = TracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    orchestrator.tracing.use_tracer_provider(provider)
    participants_sdk.tracing.use_tracer_provider(provider)
    try:
        yield RecordedSpans(provider, exporter)
    finally:
        orchestrator.tracing.use_tracer_provider(None)
        participants_sdk.tracing.use_tracer_provider(None)
        provider.shutdown()


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id
