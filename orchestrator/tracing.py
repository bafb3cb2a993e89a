"""OpenTelemetry traces of sagas, from the daemon's side: an optional extra.

Without `opentelemetry-api` installed (`AVAILABLE` is False), or with it installed and no
tracer provider configured, nothing here does anything: commands carry the saga's own
`traceparent` as they always did, and nothing else imports OpenTelemetry. With a provider
(the application's, set with `opentelemetry.trace.set_tracer_provider` or by
`opentelemetry-instrument`; or one given to `use_tracer_provider`), the daemon records:

- `saga <machine>`: the saga from its start to its outcome. A child of the span in the saga's
  `traceparent` (the caller's); a saga started without one gets a new trace at start, whose
  `traceparent` the saga keeps, and then this span is the root of that trace.
- `saga <machine> step <step>` (kind PRODUCER): one attempt of one step, from the command sent
  to its reply applied, its timeout, or its end without a reply; a child of the saga span.
  The command carries this span's context as its `traceparent`, so the participant's span is
  its child. `saga <machine> compensation <step>` likewise for a compensation.
- `saga <machine> resumed`: the part of a saga after an operator resumed it, once it ends
  again (the saga span ended with its first outcome).

Only the OpenTelemetry API is used; this module configures no provider, processor or exporter.

**Span ids.** A step span cannot be kept open from the command to its reply: the actor may be
passivated, or the daemon restarted, in between, and there are up to 100,000 steps in flight.
So every id is computed from data the saga stores: the trace id and flags come from its
`traceparent`; the saga span's id is a hash of the trace id and the saga id; a step span's id
a hash of those and the step, visit and attempt (`saga_span_id`, `step_span_id`). The command's
`traceparent` is computed when it is published (again the same after a restart), and the span
is recorded once the attempt ends, with `PendingStep.sent_at` as its start time and the
decision's time as its end.

The API gives a span's start and end times (`start_span(start_time=...)`, `end(end_time=...)`)
but no way to choose its id: the SDK's `Tracer` asks its `id_generator` (the documented
`IdGenerator` extension point of `opentelemetry.sdk.trace`) for every span it starts. Sagawire's
own tracer (instrumentation scope `sagawire`) gets a wrapper around the provider's generator
that answers with the ids in a context variable while Sagawire starts one of these spans, and
asks the provider's generator otherwise. Nothing of the application's changes: its tracers keep
the provider's generator, its sampler and processors see these spans as any other. Other ways
were worse: an `IdGenerator` the application must install on its provider (forgetting it would
silently break every trace), building `ReadableSpan`s for the provider's private span
processor, or spans kept open in memory (lost on passivation and restart). A tracer without an
`id_generator` (not the OpenTelemetry SDK's) cannot record these spans: a warning says so once,
and the saga's spans are left out.

Recording happens after a decision is stored and its commands confirmed; a crash between the
two loses those spans, never the saga's progress. Nothing here raises into the runtime.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import hashlib
from typing import TYPE_CHECKING, Any, Final, cast

import structlog

from orchestrator.core.messages import (
    Decision,
    Message,
    OperatorRequest,
    StartSaga,
    StepReply,
    TimerFired,
)
from orchestrator.core.saga import COMPENSATION_PREFIX, OutgoingCommand, PendingStep, Saga
from participants_sdk import protocol
from participants_sdk.tracing import TracerLookup, records

try:
    from opentelemetry import trace as _trace
    from opentelemetry.context import Context as _Context
except ImportError:  # the `otel` extra is not installed
    AVAILABLE = False
else:
    AVAILABLE = True

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext, Tracer, TracerProvider

__all__ = [
    "AVAILABLE",
    "command_traceparent",
    "enabled",
    "format_traceparent",
    "parse_traceparent",
    "record_decision",
    "saga_span_id",
    "step_span_id",
    "trace_start",
    "use_tracer_provider",
]

log = structlog.get_logger("sagawire.tracing")

SCOPE: Final = "sagawire"
"""The instrumentation scope of the daemon's spans."""
SAMPLED: Final = 0x01

# Attribute names: the saga's own under `sagawire.`, the messaging ones as OpenTelemetry's
# semantic conventions name them.
A_SAGA_ID: Final = "sagawire.saga.id"
A_MACHINE: Final = "sagawire.saga.machine"
A_VERSION: Final = "sagawire.saga.version"
A_OUTCOME: Final = "sagawire.saga.outcome"
A_FLAGGED: Final = "sagawire.saga.flagged"
A_STEP: Final = "sagawire.step.name"
A_PHASE: Final = "sagawire.step.phase"
A_VISIT: Final = "sagawire.step.visit"
A_ATTEMPT: Final = "sagawire.step.attempt"
A_SERVICE: Final = "sagawire.step.service"
A_COMMAND: Final = "sagawire.step.command"
A_KEY: Final = "sagawire.step.idempotency_key"
A_ENDED: Final = "sagawire.step.ended"
A_REPLY_EVENT: Final = "sagawire.reply.event"
A_REJECTED: Final = "sagawire.reply.rejected"
A_TIMED_OUT: Final = "sagawire.step.timed_out"


# -- ids: pure, with or without OpenTelemetry ---------------------------------------------


def _derive(*parts: str) -> int:
    """A non-zero 64-bit id from `parts`; each is length-prefixed, so no two lists collide."""
    text = "".join(f"{len(part)}:{part}" for part in parts)
    digest = hashlib.blake2b(text.encode(), digest_size=8, person=b"sagawire-span").digest()
    return int.from_bytes(digest, "big") or 1


def saga_span_id(trace_id: int, saga_id: str) -> int:
    """The id of the span of saga `saga_id` in trace `trace_id`."""
    return _derive(f"{trace_id:032x}", saga_id, "saga")


def step_span_id(trace_id: int, saga_id: str, step: str, visit: int, attempt: int) -> int:
    """The id of the span of one attempt of one step visit (`step` is the wire step id:
    `state`, `state.branch` or `compensate:<step>`)."""
    return _derive(f"{trace_id:032x}", saga_id, "step", step, str(visit), str(attempt))


@dataclasses.dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: int
    parent_id: int
    flags: int


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The ids and flags of a W3C `traceparent` (one `valid_traceparent` let through)."""
    if value is None:
        return None
    parts = value.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, parent_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not parent_id:
        return None
    return TraceParent(trace_id, parent_id, flags)


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


# -- the tracer -----------------------------------------------------------------------------

_chosen: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "sagawire_span_ids", default=None
)


class _ChosenIds:
    """The id generator of Sagawire's tracer: the (trace id, span id) in `_chosen` while a saga
    or step span is started, the provider's generator's ids otherwise."""

    def __init__(self, fallback: Any) -> None:  # noqa: ANN401 - the SDK's IdGenerator
        self.fallback = fallback

    def generate_span_id(self) -> int:
        chosen = _chosen.get()
        return int(self.fallback.generate_span_id()) if chosen is None else chosen[1]

    def generate_trace_id(self) -> int:
        chosen = _chosen.get()
        return int(self.fallback.generate_trace_id()) if chosen is None else chosen[0]

    def is_trace_id_random(self) -> bool:
        check = getattr(self.fallback, "is_trace_id_random", None)
        return bool(check()) if callable(check) else False


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Record the daemon's spans with `provider` rather than the global one (None: the global
    one again). For tests and for applications that keep several providers."""
    _lookup.use(provider)


def _tracer() -> Tracer | None:
    """Sagawire's tracer, or None while spans are off (see `TracerLookup`)."""
    return _lookup.tracer() if AVAILABLE else None


def _adopt(provider: Any) -> Tracer | None:  # noqa: ANN401 - a TracerProvider
    if not records(provider):
        return None  # the API's own: nothing configured
    tracer = provider.get_tracer(SCOPE)
    generator = getattr(tracer, "id_generator", None)
    if generator is None:
        log.warning(
            "tracing_unsupported",
            provider=type(provider).__qualname__,
            reason="its tracers choose span ids no other way; saga spans are left out",
        )
        return None
    if not isinstance(generator, _ChosenIds):
        cast("Any", tracer).id_generator = _ChosenIds(generator)
    return cast("Tracer", tracer)


_lookup = TracerLookup(_adopt)


def enabled() -> bool:
    """Whether the daemon records spans now."""
    return _tracer() is not None


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND: Final = dt.timedelta(microseconds=1)


def _ns(moment: dt.datetime) -> int:
    """Nanoseconds since the epoch, as OpenTelemetry takes times."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // _MICROSECOND * 1000


# -- what the runtime calls -----------------------------------------------------------------


def trace_start(message: StartSaga) -> StartSaga:
    """The start with a new trace when it has none and spans are recorded; else as it is.

    The new `traceparent` names the saga span itself as its parent: that span is then the root
    of the trace (see `_record_saga`). Whether the trace is sampled is asked of the tracer's
    sampler now, as it would be for a root span, so that every span of the saga agrees.
    """
    if message.traceparent is not None:
        return message
    tracer = _tracer()
    if tracer is None:
        return message
    try:
        generator: Any = getattr(tracer, "id_generator", None)
        trace_id = generator.generate_trace_id()
        flags = 0x02 if generator.is_trace_id_random() else 0
        sampler: Any = getattr(tracer, "sampler", None)
        if (
            sampler is None
            or sampler.should_sample(
                None, trace_id, f"saga {message.machine}", _trace.SpanKind.INTERNAL
            ).decision.is_sampled()
        ):
            flags |= SAMPLED
        traceparent = format_traceparent(trace_id, saga_span_id(trace_id, message.saga_id), flags)
    except Exception:
        log.exception("tracing_failed", saga_id=message.saga_id)
        return message
    return dataclasses.replace(message, traceparent=traceparent)


def command_traceparent(saga: Saga, command: OutgoingCommand) -> str | None:
    """The `traceparent` a command carries: its step span's context while spans are recorded,
    else the saga's own (also None)."""
    if saga.traceparent is None or _tracer() is None:
        return saga.traceparent
    parent = parse_traceparent(saga.traceparent)
    if parent is None:
        return saga.traceparent
    span_id = step_span_id(
        parent.trace_id, saga.saga_id, command.step, command.visit, command.attempt
    )
    return format_traceparent(parent.trace_id, span_id, parent.flags)


def record_decision(message: Message, before: Saga | None, decision: Decision) -> None:
    """Record the spans a stored decision ended: the attempts it stopped waiting for, and the
    saga's when it reached its outcome."""
    after = decision.saga
    if after.traceparent is None:
        return
    tracer = _tracer()
    if tracer is None:
        return
    try:
        _record(tracer, message, before, after)
    except Exception:
        log.exception("tracing_failed", saga_id=after.saga_id)


def _record(tracer: Tracer, message: Message, before: Saga | None, after: Saga) -> None:
    parent = parse_traceparent(after.traceparent)
    if parent is None:
        return
    saga_ctx = _trace.SpanContext(
        parent.trace_id,
        saga_span_id(parent.trace_id, after.saga_id),
        is_remote=True,
        trace_flags=_trace.TraceFlags(parent.flags),
    )
    if before is not None:
        for pending in before.pending:
            if pending.waiting == "reply" and _attempt_ended(pending, after):
                _record_attempt(tracer, saga_ctx, message, pending, after)
    if after.status.finished and (before is None or not before.status.finished):
        _record_saga(tracer, parent, saga_ctx, after)


def _attempt_ended(pending: PendingStep, after: Saga) -> bool:
    now = after.pending_step(pending.step)
    return not (
        now is not None
        and now.visit == pending.visit
        and now.attempt == pending.attempt
        and now.waiting == "reply"
    )


def _record_attempt(
    tracer: Tracer, saga_ctx: SpanContext, message: Message, pending: PendingStep, after: Saga
) -> None:
    end = after.updated_at
    attributes: dict[str, str | int | bool] = {
        A_SAGA_ID: after.saga_id,
        A_MACHINE: after.machine,
        A_VERSION: after.machine_version,
        A_STEP: pending.step,
        A_PHASE: pending.phase,
        A_VISIT: pending.visit,
        A_ATTEMPT: pending.attempt,
        A_SERVICE: pending.service,
        A_COMMAND: pending.command,
        A_KEY: pending.idempotency_key,
        A_TIMED_OUT: False,
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.destination.name": protocol.COMMANDS_EXCHANGE,
        "messaging.rabbitmq.destination.routing_key": protocol.command_routing_key(
            pending.service, pending.command
        ),
        "messaging.message.id": f"{pending.idempotency_key}:{pending.attempt}",
        "messaging.message.conversation_id": after.saga_id,
    }
    error = None
    if (
        isinstance(message, StepReply)
        and message.step == pending.step
        and message.visit == pending.visit
    ):
        attributes[A_ENDED] = "replied"
        attributes[A_REPLY_EVENT] = message.event
        attributes[A_REJECTED] = message.rejected
    elif isinstance(message, TimerFired) and pending.deadline <= end:
        attributes[A_ENDED] = "timed_out"
        attributes[A_TIMED_OUT] = True
        error = f"no reply to attempt {pending.attempt} in time"
    elif isinstance(message, OperatorRequest) and message.action == "retry":
        attributes[A_ENDED] = "retried"  # an operator sent a new attempt
    else:
        attributes[A_ENDED] = "abandoned"  # compensation began, or the saga ended, first
    if pending.phase == "compensation":
        action = pending.step.removeprefix(COMPENSATION_PREFIX)
        name = f"saga {after.machine} compensation {action}"
    else:
        name = f"saga {after.machine} step {pending.step}"
    span_id = step_span_id(
        saga_ctx.trace_id, after.saga_id, pending.step, pending.visit, pending.attempt
    )
    _emit(
        tracer,
        name,
        ids=(saga_ctx.trace_id, span_id),
        parent=saga_ctx,
        kind=_trace.SpanKind.PRODUCER,
        window=(pending.sent_at, end),
        attributes=attributes,
        error=error,
    )


def _record_saga(tracer: Tracer, parent: TraceParent, saga_ctx: SpanContext, saga: Saga) -> None:
    end = saga.finished_at or saga.updated_at
    attributes: dict[str, str | int | bool] = {
        A_SAGA_ID: saga.saga_id,
        A_MACHINE: saga.machine,
        A_VERSION: saga.machine_version,
        A_OUTCOME: saga.status.value,
    }
    if saga.flagged is not None:
        attributes[A_FLAGGED] = saga.flagged
    error = saga.flagged  # a failed saga waits for an operator
    resumed = [entry.at for entry in saga.history if entry.event == "resume_requested"]
    if resumed:
        # The saga span ended with the first outcome; what followed the resume gets its own.
        _emit(
            tracer,
            f"saga {saga.machine} resumed",
            ids=None,
            parent=saga_ctx,
            kind=_trace.SpanKind.INTERNAL,
            window=(resumed[-1], end),
            attributes=attributes,
            error=error,
        )
        return
    # A trace the daemon began at start names the saga span as the parent: it is the root.
    root = parent.parent_id == saga_ctx.span_id
    caller = _trace.SpanContext(
        parent.trace_id,
        parent.parent_id,
        is_remote=True,
        trace_flags=_trace.TraceFlags(parent.flags),
    )
    _emit(
        tracer,
        f"saga {saga.machine}",
        ids=(saga_ctx.trace_id, saga_ctx.span_id),
        parent=None if root else caller,
        kind=_trace.SpanKind.INTERNAL,
        window=(saga.created_at, end),
        attributes=attributes,
        error=error,
    )


def _emit(
    tracer: Tracer,
    name: str,
    *,
    ids: tuple[int, int] | None,
    parent: SpanContext | None,
    kind: Any,  # noqa: ANN401 - opentelemetry.trace.SpanKind
    window: tuple[dt.datetime, dt.datetime],
    attributes: dict[str, str | int | bool],
    error: str | None,
) -> None:
    """Record one finished span with the given ids (None: the generator's), parent (None: a
    root, in the trace of `ids`) and start and end times."""
    start, end = window
    # An explicit context, never the current one: whatever span is current in the task that
    # applies the decision has nothing to do with this saga.
    context = _Context()
    if parent is not None:
        context = _trace.set_span_in_context(_trace.NonRecordingSpan(parent), context)
    token = _chosen.set(ids)
    try:
        span = tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, start_time=_ns(start)
        )
    finally:
        _chosen.reset(token)
    if error is not None:
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, error))
    span.end(end_time=max(_ns(end), _ns(start)))
