"""The participant API: a service's command handlers, served from its command queue.

    payments = Participant("payment")

    @payments.command_handler("execute_payment")
    async def execute_payment(cmd: ExecutePayment, ctx: CommandContext) -> PaymentExecuted:
        if cmd.amount > 1000:
            raise Reject("payment_failed", reason="over limit")
        return PaymentExecuted(payment_id="p-1")

    async with payments.serve(connection):
        await stopped.wait()

`Participant._decide` is the one place that says what happens to a command: reply (published
and confirmed before the ack), retry later with backoff, or dead-letter with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import re
import time
import types
import typing
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

import structlog
from pydantic import ValidationError

from participants_sdk import protocol
from participants_sdk.dedupe import DedupeStore, MemoryDedupeStore, StoredReply
from participants_sdk.errors import (
    DuplicateHandlerError,
    ParticipantError,
    RetryLater,
)
from participants_sdk.handlers import (
    H,
    Handler,
    MalformedCommandError,
    check_handler,
    check_models_complete,
    name_of,
    read_context,
    run_handler,
    shorten,
    validation_reason,
)
from participants_sdk.headers import HeaderError, bounded, check_json_content
from participants_sdk.keyed_locks import KeyedLocks
from participants_sdk.stats import UNKNOWN, ParticipantStats
from participants_sdk.tracing import command_span

if typing.TYPE_CHECKING:
    from participants_sdk.transport import Broker, Delivery

NAME_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
MAX_CAUSE: Final = 300

# Bound per message, never at import: a module-level Participant exists before logging is set up.
_log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    reply: StoredReply
    duplicate: bool  # answered from the dedupe store, the handler did not run


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    delay: float
    retries: int  # the new value of H_RETRIES
    cause: str


@dataclasses.dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


Outcome = Reply | Retry | GiveUp


class Participant:
    """One service's command handlers; `serve(broker)` consumes `sagawire.<service>.commands`."""

    def __init__(
        self,
        service: str,
        *,
        max_retries: int = 5,
        retry_backoff: float = 0.5,
        max_retry_backoff: float = 30.0,
        dedupe: DedupeStore | None = None,
    ) -> None:
        if not NAME_PATTERN.fullmatch(service):
            raise ValueError(f"service name {service!r} must match {NAME_PATTERN.pattern}")
        if max_retries < 0 or retry_backoff < 0 or max_retry_backoff < retry_backoff:
            raise ValueError(
                "need max_retries >= 0 and 0 <= retry_backoff <= max_retry_backoff, got "
                f"{max_retries}, {retry_backoff}, {max_retry_backoff}"
            )
        self.service = service
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_retry_backoff = max_retry_backoff
        self.dedupe: DedupeStore = MemoryDedupeStore() if dedupe is None else dedupe
        self.stats = ParticipantStats(service)
        """What became of the commands, by command (`participants_sdk.prometheus` exports it)."""
        self._handlers: dict[str, Handler] = {}
        self._locks = KeyedLocks()
        self._serving = False
        self._stopping = False
        self._in_flight: set[asyncio.Task[Any]] = set()

    @property
    def handled(self) -> int:
        """Commands whose handler actually ran (a Reject or an exception counts too)."""
        return self.stats.handled.total()

    @property
    def duplicates(self) -> int:
        """Commands answered from the dedupe store without running the handler."""
        return self.stats.duplicates.total()

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        """The registered handlers by command name, read-only: their command and reply models
        (what `sagawire asyncapi` documents)."""
        return types.MappingProxyType(self._handlers)

    def command_handler(self, command: str) -> Callable[[H], H]:
        """Register the decorated async function as the handler of `command`."""
        if not NAME_PATTERN.fullmatch(command):
            raise ValueError(f"command name {command!r} must match {NAME_PATTERN.pattern}")

        def register(fn: H) -> H:
            handler = check_handler(command, fn)
            if command in self._handlers:
                raise DuplicateHandlerError(
                    f"participant {self.service!r} has a handler for command {command!r} "
                    f"already ({name_of(self._handlers[command].fn)}); "
                    f"cannot register {name_of(fn)} too"
                )
            self._handlers[command] = handler
            return fn

        return register

    @contextlib.asynccontextmanager
    async def serve(
        self, broker: Broker, *, prefetch: int = 16, grace: float = 30.0
    ) -> AsyncIterator[Participant]:
        """Consume this service's commands until the block exits, then stop gracefully.

        On exit the subscription is cancelled and handlers in flight get `grace` seconds to
        finish; those still running are cancelled and their commands are redelivered later.
        """
        if not self._handlers:
            raise ParticipantError(f"participant {self.service!r} has no command handlers")
        if self._serving:
            raise ParticipantError(f"participant {self.service!r} is serving already")
        for handler in self._handlers.values():
            check_models_complete(handler)
        self._serving, self._stopping = True, False
        try:
            await broker.declare_service(self.service)
            subscription = await broker.consume(
                protocol.command_queue(self.service),
                functools.partial(self._serve_one, broker),
                prefetch=prefetch,
            )
            log = _log.bind(service=self.service)
            log.info("participant serving", commands=self.commands, prefetch=prefetch)
            try:
                yield self
            finally:
                self._stopping = True
                await subscription.cancel()
                await self._drain(grace)
                log.info("participant stopped")
        finally:
            self._serving = False

    async def _serve_one(self, broker: Broker, delivery: Delivery) -> None:
        if self._stopping:  # handed over just before the subscription was cancelled
            await delivery.requeue()
            return
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self.handle(delivery, broker)
        finally:
            self._in_flight.discard(task)

    async def _drain(self, grace: float) -> None:
        if not self._in_flight:
            return
        _, late = await asyncio.wait(set(self._in_flight), timeout=grace)
        if late:
            _log.warning("cancelling handlers after grace", service=self.service, count=len(late))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def handle(self, delivery: Delivery, broker: Broker | None = None) -> None:
        """Process one delivery of a command and settle it; replies go through `broker`."""
        if broker is None:
            raise ParticipantError("handle() outside serve() needs the broker to reply through")
        # Within the command's span (one that records nothing without OpenTelemetry), inline:
        # this runs for every command, and a coroutine more per command is measurable.
        with command_span(self.service, delivery.message) as span:
            command = delivery.message
            log = _log.bind(
                service=self.service,
                command=command.type,
                saga_id=command.correlation_id,
                message_id=command.message_id,
            )
            outcome = await self._decide(command)
            counted = command.type if command.type in self._handlers else UNKNOWN
            match outcome:
                # Each case settles first and logs after: a failing log call cannot strand a
                # command.
                case Reply(stored, duplicate):
                    reply = self._reply(command, stored, span.traceparent)
                    try:
                        await broker.publish(protocol.REPLIES_EXCHANGE, self.service, reply)
                    except (
                        Exception
                    ) as exc:  # unconfirmed: the command returns, its reply goes again
                        await delivery.requeue()
                        self.stats.requeued[counted] += 1
                        span.not_confirmed()
                        log.warning("reply not confirmed; command requeued", exc_info=exc)
                        return
                    await delivery.ack()
                    span.replied(stored.event, rejected=stored.rejected, duplicate=duplicate)
                    log.info(
                        "reply sent",
                        reply_event=stored.event,
                        rejected=stored.rejected,
                        duplicate=duplicate,
                    )
                case Retry(delay, retries, cause):
                    await delivery.retry_later(delay, {protocol.H_RETRIES: retries})
                    self.stats.retried[counted] += 1
                    span.retrying(delay, cause)
                    log.warning(
                        "command retry scheduled", delay=delay, retries=retries, cause=cause
                    )
                case GiveUp(reason):
                    await delivery.dead_letter(reason)
                    self.stats.dead_lettered[counted] += 1
                    span.dead_lettered(reason)
                    log.error("command dead-lettered", reason=reason)

    async def _decide(self, message: protocol.WireMessage) -> Outcome:
        """The one place that decides between reply, retry and dead-letter."""
        try:
            check_json_content(message.content_type, message.content_encoding)
            body = protocol.decode_json_object(message.body)
            ctx = read_context(message, _log.bind(service=self.service))
            retries = max(message.header_int(protocol.H_RETRIES) or 0, 0)
        except (protocol.BodyError, HeaderError, MalformedCommandError) as exc:
            return GiveUp(bounded(str(exc)))
        handler = self._handlers.get(message.type)
        if handler is None:
            return GiveUp(f"no handler for command {message.type!r} on service {self.service!r}")
        try:
            command = handler.command_model.model_validate(body)
        except ValidationError as exc:
            return GiveUp(validation_reason(handler, exc))
        stats = self.stats
        async with self._locks.hold(ctx.idempotency_key):
            try:
                stored = await self.dedupe.get(ctx.idempotency_key)
                duplicate = stored is not None
                if stored is None:
                    stats.handled[handler.command] += 1
                    began = time.perf_counter()
                    try:
                        stored = await run_handler(handler, command, ctx)
                    finally:
                        stats.handler_seconds[handler.command].observe(time.perf_counter() - began)
                    if stored.rejected:
                        stats.rejected[handler.command] += 1
                    await self.dedupe.put(ctx.idempotency_key, stored)
                else:
                    self.stats.duplicates[handler.command] += 1
            except RetryLater as exc:
                return self._retry(retries, exc.delay, f"retry requested: {exc.reason or '-'}")
            except Exception as exc:  # a failing handler is retried, then dead-lettered
                outcome = self._retry(retries, None, f"{type(exc).__name__}: {exc}")
                if retries == 0 or isinstance(outcome, GiveUp):  # the traceback, first and last
                    ctx.log.warning("command handler failed", retries=retries, exc_info=exc)
                return outcome
        return Reply(stored, duplicate)

    def _retry(self, retries: int, delay: float | None, cause: str) -> Retry | GiveUp:
        cause = shorten(cause)
        if retries >= self.max_retries:
            return GiveUp(f"handler failed {retries + 1} times: {cause}")
        if delay is None:
            delay = min(self.retry_backoff * 2**retries, self.max_retry_backoff)
        return Retry(delay, retries + 1, cause)

    def _reply(
        self, command: protocol.WireMessage, stored: StoredReply, traceparent: str | None = None
    ) -> protocol.WireMessage:
        """The reply to `command`; `traceparent` (the handling's span) instead of the command's."""
        headers: dict[str, Any] = {
            name: command.headers[name] for name in protocol.REPLY_COPIES if name in command.headers
        }
        headers[protocol.H_SERVICE] = self.service
        if traceparent is not None:
            headers[protocol.H_TRACEPARENT] = traceparent
        if stored.rejected:
            headers[protocol.H_REJECTED] = True
        return protocol.WireMessage.json(
            type=stored.event,
            payload=stored.body,
            correlation_id=command.correlation_id,
            headers=headers,
        )
