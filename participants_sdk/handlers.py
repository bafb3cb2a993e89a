"""A command handler: what the decorator checks, what a handler is given, how its result is read.

A handler is an `async def` taking a pydantic command model and a `CommandContext`, returning a
pydantic reply model; `check_handler` says so when it is decorated, not on the first command.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeGuard, TypeVar

from pydantic import BaseModel, PydanticUserError, ValidationError

from participants_sdk import protocol
from participants_sdk.dedupe import StoredReply
from participants_sdk.errors import HandlerSignatureError, Reject
from participants_sdk.headers import valid_traceparent

if typing.TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

_WORD_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
MAX_CAUSE: Final = 300


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
    traceparent: str | None = None
    """The command's W3C trace context: the saga's, when it was started with one, or the step's
    span when the daemon records spans. The SDK copies it onto the reply, or, when it records a
    span for the command itself (`participants_sdk.tracing`), puts that span's there."""


HandlerFn = Callable[[Any, CommandContext], Awaitable[BaseModel]]
H = TypeVar("H", bound=HandlerFn)


@dataclasses.dataclass(frozen=True, slots=True)
class Handler:
    """A registered command handler: its function, the command's model and the reply's."""

    command: str
    fn: HandlerFn
    command_model: type[BaseModel]
    reply_model: type[BaseModel]

    @property
    def event(self) -> str:
        """The event a successful reply is sent as."""
        return event_name_of(self.reply_model)


class MalformedCommandError(ValueError):
    pass


async def run_handler(handler: Handler, command: BaseModel, ctx: CommandContext) -> StoredReply:
    try:
        result = await handler.fn(command, ctx)
    except Reject as reject:
        # Through JSON and back, so the stored reply is exactly what goes on the wire.
        return StoredReply(
            reject.event, json.loads(protocol.encode_json(reject.details)), rejected=True
        )
    if not isinstance(result, BaseModel):
        raise TypeError(f"handler returned {type(result).__name__}, not a pydantic model")
    return reply_of(result)


def reply_of(result: BaseModel) -> StoredReply:
    """The reply the SDK sends for a handler's result: for a handler that stores it itself, in
    the same transaction as its effect (`MongoDedupeStore.put(..., session=...)`)."""
    return StoredReply(event_name_of(type(result)), result.model_dump(mode="json"))


def read_context(message: protocol.WireMessage, log: FilteringBoundLogger) -> CommandContext:
    """The headers a command must carry; a command without them can never be answered."""
    saga_id = message.correlation_id
    if not saga_id:
        raise MalformedCommandError("command has no correlation_id (the saga id)")

    def text(name: str) -> str:
        value = message.header_str(name)
        if not value:
            raise MalformedCommandError(f"command has no {name} header")
        return value

    def number(name: str, *, required: bool) -> int:
        if name not in message.headers and not required:
            return 0
        value = message.header_int(name)  # HeaderError when it is no integer
        if value is None:
            raise MalformedCommandError(f"command has no {name} header")
        if value < 1:
            raise MalformedCommandError(f"header {name} must be a positive integer, got {value}")
        return value

    key, attempt = text(protocol.H_IDEMPOTENCY_KEY), number(protocol.H_ATTEMPT, required=True)
    return CommandContext(
        saga_id=saga_id,
        idempotency_key=key,
        attempt=attempt,
        step=text(protocol.H_STEP),
        visit=number(protocol.H_VISIT, required=False),
        machine=message.header_str(protocol.H_MACHINE) or "",
        message_id=message.message_id,
        log=log.bind(command=message.type, saga_id=saga_id, idempotency_key=key, attempt=attempt),
        compensates=message.header_str(protocol.H_COMPENSATES),
        traceparent=valid_traceparent(message.headers.get(protocol.H_TRACEPARENT)),
    )


def validation_reason(handler: Handler, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    fields = [f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in errors[:5]]
    if len(errors) > 5:
        fields.append(f"and {len(errors) - 5} more")
    model = handler.command_model.__name__
    return shorten(f"command {handler.command!r} is not a valid {model}: " + "; ".join(fields))


def shorten(text: str, limit: int = MAX_CAUSE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_model(annotation: object) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def name_of(fn: object) -> str:
    return str(getattr(fn, "__qualname__", repr(fn)))


def check_handler(command: str, fn: HandlerFn) -> Handler:
    """Check at decoration time that the SDK can call `fn` and knows its command and reply."""
    where = f"handler {name_of(fn)} for command {command!r}"
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
    return Handler(command, fn, command_model, reply_model)


def check_models_complete(handler: Handler) -> None:
    """Resolve the forward references of the handler's models, or say which cannot be.

    Run when serving starts, once every model of the module exists: a model pydantic cannot
    complete would otherwise fail every command it is given.
    """
    for model in (handler.command_model, handler.reply_model):
        try:
            model.model_rebuild(raise_errors=True)
        except (PydanticUserError, NameError) as exc:
            raise HandlerSignatureError(
                f"handler {name_of(handler.fn)} for command {handler.command!r}: model "
                f"{model.__qualname__} is not fully defined: {exc}"
            ) from None
