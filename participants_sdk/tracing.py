"""OpenTelemetry traces of a participant's commands: an optional extra (`sagawire-sdk[otel]`).

The one module of the SDK that imports OpenTelemetry, and only its API. Without
`opentelemetry-api` (`AVAILABLE` is False), or with no tracer provider configured, a command's
handling records nothing and its reply carries the command's `traceparent`, copied, as always.
With a provider (the application's global one, or one given to `use_tracer_provider`):

- every command delivered gets a span `<service> <command> process` (kind CONSUMER), a child
  of the context in the command's `traceparent` (the daemon's step span), current while the
  handler runs, so that what the handler calls joins the trace; a command answered from the
  dedupe store gets one too, with `sagawire.duplicate` true;
- the reply carries that span's context as its `traceparent`;
- `SagaClient.start_saga` without a `traceparent` sends the caller's current span's
  (`current_traceparent`), whether or not a provider is configured here.

Nothing here raises into the participant: a failure to trace leaves the command untraced.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Self

import structlog

from participants_sdk import protocol
from participants_sdk.headers import HeaderError, valid_traceparent

try:
    from opentelemetry import context as _context
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the `otel` extra is not installed
    AVAILABLE = False
else:
    AVAILABLE = True
    _W3C: Final = TraceContextTextMapPropagator()

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "AVAILABLE",
    "CommandSpan",
    "command_span",
    "current_traceparent",
    "use_tracer_provider",
]

_log = structlog.get_logger(__name__)

SCOPE: Final = "sagawire.participant"
"""The instrumentation scope of the participants' spans."""

LOOK_AGAIN_SECONDS: Final = 1.0
"""While no tracer provider is configured, how often to look for one again."""


class TracerLookup:
    """A tracer looked up on every command or decision, so cheap: one once made is kept (a
    global provider, once set, cannot be replaced); while there is none, the global provider is
    looked at again at most once per `LOOK_AGAIN_SECONDS`, so that one an application
    configures after serving began is taken up. `adopt` makes the tracer from a provider, or
    says (None) that the provider records nothing. Used while `AVAILABLE` only."""

    def __init__(self, adopt: Callable[[Any], Tracer | None]) -> None:
        self._adopt = adopt
        self.use(None)

    def use(self, provider: TracerProvider | None) -> None:
        """`provider` rather than the global one (None: the global one again)."""
        self._override = provider
        self._tracer: Tracer | None = None
        self._looked_at: object = None
        self._look_again = 0.0

    def tracer(self) -> Tracer | None:
        if self._tracer is not None:
            return self._tracer
        provider: Any = self._override
        if provider is None:
            now = time.monotonic()
            if now < self._look_again:
                return None
            self._look_again = now + LOOK_AGAIN_SECONDS
            provider = _trace.get_tracer_provider()
        if provider is not self._looked_at:
            self._looked_at = provider
            self._tracer = self._adopt(provider)
        return self._tracer


def records(provider: Any) -> bool:  # noqa: ANN401 - a TracerProvider
    """Whether `provider` is one that records: not the API's own stand-ins."""
    return not isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider)


def _plain_tracer(provider: Any) -> Tracer | None:  # noqa: ANN401 - a TracerProvider
    return provider.get_tracer(SCOPE) if records(provider) else None


_lookup = TracerLookup(_plain_tracer)


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Record command spans with `provider` rather than the global one (None: the global one
    again). For tests and for applications that keep several providers."""
    _lookup.use(provider)


def _tracer() -> Tracer | None:
    """The SDK's tracer, or None while spans are off (see `TracerLookup`)."""
    return _lookup.tracer() if AVAILABLE else None


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the caller's current span, None when there is none (or no
    OpenTelemetry)."""
    if not AVAILABLE:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return valid_traceparent(carrier.get(protocol.H_TRACEPARENT))


class CommandSpan:
    """The span of one command's handling, as `Participant.handle` sees it. This base is the
    one used when traces are off: it records nothing, and the reply keeps the command's
    `traceparent` (`traceparent` None)."""

    __slots__ = ()

    @property
    def traceparent(self) -> str | None:
        """The `traceparent` the reply carries instead of the command's; None: the command's."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        return None

    def replied(self, event: str, *, rejected: bool, duplicate: bool) -> None:
        """The command was answered with `event` (from the dedupe store when `duplicate`)."""

    def not_confirmed(self) -> None:
        """The reply was not confirmed; the command goes back to its queue."""

    def retrying(self, delay: float, cause: str) -> None:
        """The handler failed or asked for a retry; the command comes again in `delay` s."""

    def dead_lettered(self, reason: str) -> None:
        """The command was dead-lettered."""


UNTRACED: Final = CommandSpan()


class _TracedCommand(CommandSpan):
    __slots__ = ("_context", "_reply_traceparent", "_span", "_token")

    def __init__(self, span: Span, parent: Any) -> None:  # noqa: ANN401 - an OpenTelemetry Context
        self._span = span
        self._context = _trace.set_span_in_context(span, parent)
        self._token: Any = None  # a context token (typed `object` by older API versions)
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, self._context)
        self._reply_traceparent = valid_traceparent(carrier.get(protocol.H_TRACEPARENT))

    @property
    def traceparent(self) -> str | None:
        return self._reply_traceparent

    def __enter__(self) -> Self:
        # Current while the command is handled: what the handler calls joins the trace.
        self._token = _context.attach(self._context)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        try:
            if exc is not None:
                self._span.record_exception(exc)
                self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, type(exc).__name__))
        finally:
            if self._token is not None:
                _context.detach(self._token)
            self._span.end()

    def replied(self, event: str, *, rejected: bool, duplicate: bool) -> None:
        self._span.set_attributes(
            {
                "sagawire.reply.event": event,
                "sagawire.reply.rejected": rejected,
                "sagawire.duplicate": duplicate,
                "sagawire.outcome": "replied",
            }
        )

    def not_confirmed(self) -> None:
        self._span.set_attribute("sagawire.outcome", "requeued")
        self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, "reply not confirmed"))

    def retrying(self, delay: float, cause: str) -> None:
        self._span.set_attributes({"sagawire.outcome": "retry", "sagawire.retry.delay": delay})
        self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, cause))

    def dead_lettered(self, reason: str) -> None:
        self._span.set_attribute("sagawire.outcome", "dead_lettered")
        self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, reason))


def command_span(service: str, message: protocol.WireMessage) -> CommandSpan:
    """The span of `message`'s handling by `service`, to enter around it; `UNTRACED` when
    traces are off."""
    tracer = _tracer()
    if tracer is None:
        return UNTRACED
    try:
        return _start(tracer, service, message)
    except Exception:  # noqa: BLE001 - logged; the command is handled untraced
        _log.exception("tracing failed", service=service, message_id=message.message_id)
        return UNTRACED


def _start(tracer: Tracer, service: str, message: protocol.WireMessage) -> CommandSpan:
    traceparent = valid_traceparent(message.headers.get(protocol.H_TRACEPARENT))
    # The command's context when it has one; else whatever is current (a span of the broker
    # client's own instrumentation, or none: then this span starts a trace).
    parent = (
        _W3C.extract({protocol.H_TRACEPARENT: traceparent})
        if traceparent is not None
        else _context.get_current()
    )
    attributes: dict[str, str | int] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.destination.name": protocol.COMMANDS_EXCHANGE,
        "messaging.destination.subscription.name": protocol.command_queue(service),
        "messaging.rabbitmq.destination.routing_key": protocol.command_routing_key(
            service, message.type
        ),
        "messaging.message.id": message.message_id,
        "sagawire.service": service,
        "sagawire.command": message.type,
    }
    if message.correlation_id:
        attributes["sagawire.saga.id"] = message.correlation_id
        attributes["messaging.message.conversation_id"] = message.correlation_id
    for header, attribute in _TEXT_HEADERS:
        if (text := _text(message, header)) is not None:
            attributes[attribute] = text
    for header, attribute in _INT_HEADERS:
        if (number := _int(message, header)) is not None:
            attributes[attribute] = number
    span = tracer.start_span(
        f"{service} {message.type} process",
        context=parent,
        kind=_trace.SpanKind.CONSUMER,
        attributes=attributes,
    )
    return _TracedCommand(span, parent)


_TEXT_HEADERS: Final = (
    (protocol.H_IDEMPOTENCY_KEY, "sagawire.step.idempotency_key"),
    (protocol.H_STEP, "sagawire.step.name"),
    (protocol.H_MACHINE, "sagawire.saga.machine"),
    (protocol.H_COMPENSATES, "sagawire.step.compensates"),
)
_INT_HEADERS: Final = (
    (protocol.H_ATTEMPT, "sagawire.step.attempt"),
    (protocol.H_VISIT, "sagawire.step.visit"),
    (protocol.H_VERSION, "sagawire.saga.version"),
    (protocol.H_RETRIES, "sagawire.retries"),
)


def _text(message: protocol.WireMessage, name: str) -> str | None:
    try:
        return message.header_str(name)
    except HeaderError:  # the handling dead-letters it and says why; the span leaves it out
        return None


def _int(message: protocol.WireMessage, name: str) -> int | None:
    try:
        number = message.header_int(name)
    except HeaderError:
        return None
    # An attribute holds a 64-bit integer; the header may hold a wider one.
    return number if number is not None and -(2**63) <= number < 2**63 else None
