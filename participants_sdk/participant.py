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
import inspect
import json
import re
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeGuard, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from participants_sdk import protocol as p
from participants_sdk.dedupe import DedupeStore, KeyedLocks, MemoryDedupeStore, StoredReply
from participants_sdk.errors import (
    DuplicateHandlerError,
    HandlerSignatureError,
    ParticipantError,
    Reject,
    RetryLater,
)
from participants_sdk.headers import HeaderError, bounded, check_json_content

if typing.TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from participants_sdk.transport import Broker, Delivery

NAME_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_COPIED_HEADERS: Final = (
    p.H_MACHINE,
    p.H_VERSION,
    p.H_STEP,
    p.H_VISIT,
    p.H_ATTEMPT,
    p.H_IDEMPOTENCY_KEY,
    p.H_TRACEPARENT,
)
_WORD_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_MAX_CAUSE: Final = 300

# Bound per message, never at import: a module-level Participant exists before logging is set up.
_log = structlog.get_logger(__name__)


def event_name_of(model: type[BaseModel]) -> str:
    """A reply model's event: its `event_name: ClassVar[str]`, else its class name in snake_case."""
    if "event_name" in model.__class_vars__:
        name = getattr(model, "event_name", None)
        if not isinstance(name, str) or not name:
            raise HandlerSignatureError(
                f"{model.__qualname__}.event_name must be a non-empty string, got {name!r}"
            )
        return name
    return _WORD_BOUNDARY.sub("_", model.__name__).lower()


@dataclasses.dataclass(frozen=True, slots=True)
class CommandContext:
    """What a handler knows about the command besides its input."""

    saga_id: str
    idempotency_key: str
    attempt: int
    step: str
    visit: int
    machine: str
    message_id: str
    log: FilteringBoundLogger = dataclasses.field(repr=False, compare=False)
    compensates: str | None = None
    """On a compensation: the idempotency key of the step it undoes."""


HandlerFn = Callable[[Any, CommandContext], Awaitable[BaseModel]]
H = TypeVar("H", bound=HandlerFn)


@dataclasses.dataclass(frozen=True, slots=True)
class _Handler:
    command: str
    fn: HandlerFn
    command_model: type[BaseModel]


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
class DeadLetter:
    reason: str


Outcome = Reply | Retry | DeadLetter


class _MalformedCommandError(ValueError):
    pass


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
        self.handled = 0
        """Commands whose handler actually ran (a Reject or an exception counts too)."""
        self.duplicates = 0
        """Commands answered from the dedupe store without running the handler."""
        self._handlers: dict[str, _Handler] = {}
        self._locks = KeyedLocks()
        self._serving = False
        self._stopping = False
        self._in_flight: set[asyncio.Task[Any]] = set()

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    def command_handler(self, command: str) -> Callable[[H], H]:
        """Register the decorated async function as the handler of `command`."""
        if not NAME_PATTERN.fullmatch(command):
            raise ValueError(f"command name {command!r} must match {NAME_PATTERN.pattern}")

        def register(fn: H) -> H:
            handler = _check_handler(command, fn)
            if command in self._handlers:
                raise DuplicateHandlerError(
                    f"participant {self.service!r} has a handler for command {command!r} "
                    f"already ({_name_of(self._handlers[command].fn)}); "
                    f"cannot register {_name_of(fn)} too"
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
        self._serving, self._stopping = True, False
        try:
            await broker.declare_service(self.service)
            subscription = await broker.consume(
                p.command_queue(self.service),
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
        command = delivery.message
        log = _log.bind(
            service=self.service,
            command=command.type,
            saga_id=command.correlation_id,
            message_id=command.message_id,
        )
        outcome = await self._decide(command)
        match outcome:
            # Each case settles first and logs after: a failing log call cannot strand a command.
            case Reply(stored, duplicate):
                reply = self._reply(command, stored)
                try:
                    await broker.publish(p.REPLIES_EXCHANGE, self.service, reply)
                except Exception as exc:  # unconfirmed: the command returns, its reply goes again
                    await delivery.requeue()
                    log.warning("reply not confirmed; command requeued", exc_info=exc)
                    return
                await delivery.ack()
                log.info(
                    "reply sent",
                    reply_event=stored.event,
                    rejected=stored.rejected,
                    duplicate=duplicate,
                )
            case Retry(delay, retries, cause):
                await delivery.retry_later(delay, {p.H_RETRIES: retries})
                log.warning("command retry scheduled", delay=delay, retries=retries, cause=cause)
            case DeadLetter(reason):
                await delivery.dead_letter(reason)
                log.error("command dead-lettered", reason=reason)

    async def _decide(self, message: p.WireMessage) -> Outcome:
        """The one place that decides between reply, retry and dead-letter."""
        try:
            check_json_content(message.content_type, message.content_encoding)
            body = p.decode_json_object(message.body)
            ctx = _read_context(message, _log.bind(service=self.service))
            retries = max(message.header_int(p.H_RETRIES) or 0, 0)
        except (p.BodyError, HeaderError, _MalformedCommandError) as exc:
            return DeadLetter(bounded(str(exc)))
        handler = self._handlers.get(message.type)
        if handler is None:
            return DeadLetter(
                f"no handler for command {message.type!r} on service {self.service!r}"
            )
        try:
            command = handler.command_model.model_validate(body)
        except ValidationError as exc:
            return DeadLetter(_validation_reason(handler, exc))
        async with self._locks.hold(ctx.idempotency_key):
            try:
                stored = await self.dedupe.get(ctx.idempotency_key)
                duplicate = stored is not None
                if stored is None:
                    self.handled += 1
                    stored = await _run(handler, command, ctx)
                    await self.dedupe.put(ctx.idempotency_key, stored)
                else:
                    self.duplicates += 1
            except RetryLater as exc:
                return self._retry(retries, exc.delay, f"retry requested: {exc.reason or '-'}")
            except Exception as exc:  # a failing handler is retried, then dead-lettered
                outcome = self._retry(retries, None, f"{type(exc).__name__}: {exc}")
                if retries == 0 or isinstance(outcome, DeadLetter):  # the traceback, first and last
                    ctx.log.warning("command handler failed", retries=retries, exc_info=exc)
                return outcome
        return Reply(stored, duplicate)

    def _retry(self, retries: int, delay: float | None, cause: str) -> Retry | DeadLetter:
        cause = _shorten(cause)
        if retries >= self.max_retries:
            return DeadLetter(f"handler failed {retries + 1} times: {cause}")
        if delay is None:
            delay = min(self.retry_backoff * 2**retries, self.max_retry_backoff)
        return Retry(delay, retries + 1, cause)

    def _reply(self, command: p.WireMessage, stored: StoredReply) -> p.WireMessage:
        headers: dict[str, Any] = {
            name: command.headers[name] for name in _COPIED_HEADERS if name in command.headers
        }
        headers[p.H_SERVICE] = self.service
        if stored.rejected:
            headers[p.H_REJECTED] = True
        return p.WireMessage.json(
            type=stored.event,
            payload=stored.body,
            correlation_id=command.correlation_id,
            headers=headers,
        )


async def _run(handler: _Handler, command: BaseModel, ctx: CommandContext) -> StoredReply:
    try:
        result = await handler.fn(command, ctx)
    except Reject as reject:
        # Through JSON and back, so the stored reply is exactly what goes on the wire.
        return StoredReply(reject.event, json.loads(p.encode_json(reject.details)), rejected=True)
    if not isinstance(result, BaseModel):
        raise TypeError(f"handler returned {type(result).__name__}, not a pydantic model")
    return StoredReply(event_name_of(type(result)), result.model_dump(mode="json"))


def _read_context(message: p.WireMessage, log: FilteringBoundLogger) -> CommandContext:
    """The headers a command must carry; a command without them can never be answered."""
    saga_id = message.correlation_id
    if not saga_id:
        raise _MalformedCommandError("command has no correlation_id (the saga id)")

    def text(name: str) -> str:
        value = message.header_str(name)
        if not value:
            raise _MalformedCommandError(f"command has no {name} header")
        return value

    def number(name: str, *, required: bool) -> int:
        if name not in message.headers and not required:
            return 0
        value = message.header_int(name)  # HeaderError when it is no integer
        if value is None:
            raise _MalformedCommandError(f"command has no {name} header")
        if value < 1:
            raise _MalformedCommandError(f"header {name} must be a positive integer, got {value}")
        return value

    key, attempt = text(p.H_IDEMPOTENCY_KEY), number(p.H_ATTEMPT, required=True)
    return CommandContext(
        saga_id=saga_id,
        idempotency_key=key,
        attempt=attempt,
        step=text(p.H_STEP),
        visit=number(p.H_VISIT, required=False),
        machine=message.header_str(p.H_MACHINE) or "",
        message_id=message.message_id,
        log=log.bind(command=message.type, saga_id=saga_id, idempotency_key=key, attempt=attempt),
        compensates=message.header_str(p.H_COMPENSATES),
    )


def _validation_reason(handler: _Handler, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    fields = [f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in errors[:5]]
    if len(errors) > 5:
        fields.append(f"and {len(errors) - 5} more")
    model = handler.command_model.__name__
    return _shorten(f"command {handler.command!r} is not a valid {model}: " + "; ".join(fields))


def _shorten(text: str, limit: int = _MAX_CAUSE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_model(annotation: object) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _name_of(fn: object) -> str:
    return str(getattr(fn, "__qualname__", repr(fn)))


def _check_handler(command: str, fn: HandlerFn) -> _Handler:
    """Check at decoration time that the SDK can call `fn` and knows its command and reply."""
    where = f"handler {_name_of(fn)} for command {command!r}"
    if not inspect.iscoroutinefunction(fn):
        raise HandlerSignatureError(f"{where} must be an async function (async def)")
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) != 2 or any(param.kind not in positional for param in params):
        names = ", ".join(param.name for param in params)
        raise HandlerSignatureError(
            f"{where} must take exactly two positional parameters (command, ctx), not ({names})"
        )
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError) as exc:
        raise HandlerSignatureError(
            f"cannot resolve the annotations of {where}: {exc} (define its models at module level)"
        ) from exc
    command_param, ctx_param = params
    command_model = hints.get(command_param.name)
    if not _is_model(command_model):
        raise HandlerSignatureError(
            f"{where}: parameter {command_param.name!r} must be annotated with a pydantic "
            f"BaseModel subclass (the command's input), got {command_model!r}"
        )
    if hints.get(ctx_param.name) is not CommandContext:
        raise HandlerSignatureError(
            f"{where}: parameter {ctx_param.name!r} must be annotated with CommandContext, "
            f"got {hints.get(ctx_param.name)!r}"
        )
    reply_model = hints.get("return")
    if not _is_model(reply_model):
        raise HandlerSignatureError(
            f"{where} must declare its return type as a pydantic BaseModel subclass "
            f"(the reply event), got {reply_model!r}"
        )
    event_name_of(reply_model)  # a bad `event_name` fails now, not on the first command
    return _Handler(command, fn, command_model)
