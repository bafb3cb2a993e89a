"""Machine definitions: the pydantic models behind `machines/*.yaml`.

A machine is a set of named states. The kind of a state follows from its keys:

- task      `command:` one command to a service, with `on:` transitions per reply event
- choice    `choice:` conditions on saga data, first match wins, else `default`
- parallel  `parallel:` several branches commanded at once, joined when all replied
- final     `final: succeeded | compensated | failed`

`compensate` is a reserved transition target: run the compensations of the completed steps in
reverse order, then end `compensated`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from orchestrator.core.conditions import Condition
from orchestrator.core.durations import Duration
from orchestrator.core.paths import DataPath, parse_path, parse_save_path

COMPENSATE: Final = "compensate"
NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_-]*$"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
FinalOutcome = Literal["succeeded", "compensated", "failed"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(value: Any, where: str) -> None:  # noqa: ANN401 - input templates are JSON
    if isinstance(value, str) and value.startswith("$") and not value.startswith("$$"):
        try:
            parse_path(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_template(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_template(item, f"{where}[{index}]")


def render_template(value: Any, data: dict[str, Any]) -> Any:  # noqa: ANN401
    """Replace every `$.path` string in an input template by the saga data it points at.

    `$$text` is the literal string `$text`. Raises `MissingPath` for a required path with no data.
    """
    if isinstance(value, str) and value.startswith("$"):
        if value.startswith("$$"):
            return value[1:]
        return parse_path(value).resolve(data)
    if isinstance(value, dict):
        return {key: render_template(item, data) for key, item in value.items()}
    if isinstance(value, list):
        return [render_template(item, data) for item in value]
    return value


class RetryPolicy(_Model):
    """How often a command is sent before its step counts as timed out, and how far apart."""

    attempts: int = Field(default=3, ge=1, le=100)
    backoff: Duration = 1.0
    max_backoff: Duration = 60.0
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after `attempt` timed out before sending attempt + 1."""
        return float(min(self.max_backoff, self.backoff * self.multiplier ** (attempt - 1)))


class CommandSpec(_Model):
    service: Name
    name: Name
    input: dict[str, Any] = Field(default_factory=dict)

    @field_validator("input")
    @classmethod
    def _paths_parse(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_template(value, "input")
        return value


class CompensationSpec(CommandSpec):
    """A compensation is retried harder than a step: it has no business way to fail."""

    timeout: Duration = 30.0
    retry: RetryPolicy = RetryPolicy(attempts=5, backoff=2.0, max_backoff=60.0)


class _SavesReply(_Model):
    save_as: str | None = None
    """Where in saga data the reply body is kept: `payment` or `$.payment.result`."""

    @field_validator("save_as")
    @classmethod
    def _save_path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_save_path(value)
        return value

    @functools.cached_property
    def save_path(self) -> DataPath | None:
        return None if self.save_as is None else parse_save_path(self.save_as)


class Transition(_SavesReply):
    goto: str


def _transition_shorthand(value: Any) -> Any:  # noqa: ANN401
    return {"goto": value} if isinstance(value, str) else value


TransitionField = Annotated[Transition, BeforeValidator(_transition_shorthand)]


class _StateBase(_Model):
    label: str | None = None
    """Business-state label for reports, e.g. `PAYMENT_PENDING`."""
    description: str | None = None


class TaskState(_StateBase):
    kind: Literal["task"] = "task"
    command: CommandSpec
    compensation: CompensationSpec | None = None
    timeout: Duration = 30.0
    retry: RetryPolicy = RetryPolicy()
    on: dict[Name, TransitionField] = Field(default_factory=dict)
    on_timeout: str = COMPENSATE

    def targets(self) -> Iterator[tuple[str, str]]:
        for event, transition in self.on.items():
            yield f"on.{event}.goto", transition.goto
        yield "on_timeout", self.on_timeout


class ChoiceRule(_Model):
    when: Condition
    goto: str


class ChoiceState(_StateBase):
    kind: Literal["choice"] = "choice"
    choice: list[ChoiceRule] = Field(min_length=1)
    default: str

    def targets(self) -> Iterator[tuple[str, str]]:
        for index, rule in enumerate(self.choice):
            yield f"choice[{index}].goto", rule.goto
        yield "default", self.default


class BranchResult(_SavesReply):
    result: Literal["done", "fail"]


def _branch_shorthand(value: Any) -> Any:  # noqa: ANN401
    return {"result": value} if isinstance(value, str) else value


class Branch(_Model):
    command: CommandSpec
    compensation: CompensationSpec | None = None
    timeout: Duration = 30.0
    retry: RetryPolicy = RetryPolicy()
    on: dict[Name, Annotated[BranchResult, BeforeValidator(_branch_shorthand)]]

    @field_validator("on")
    @classmethod
    def _has_done(cls, value: dict[str, BranchResult]) -> dict[str, BranchResult]:
        if not any(r.result == "done" for r in value.values()):
            raise ValueError("a branch needs at least one event with result 'done'")
        return value


class ParallelState(_StateBase):
    kind: Literal["parallel"] = "parallel"
    parallel: dict[Name, Branch] = Field(min_length=1)
    then: str
    on_failure: str = COMPENSATE

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "then", self.then
        yield "on_failure", self.on_failure


class FinalState(_StateBase):
    kind: Literal["final"] = "final"
    final: FinalOutcome

    def targets(self) -> Iterator[tuple[str, str]]:
        return iter(())


def _state_kind(value: Any) -> str | None:  # noqa: ANN401
    if isinstance(value, BaseModel):
        return str(getattr(value, "kind", None))
    if not isinstance(value, dict):
        return None
    for kind in ("final", "choice", "parallel"):
        if kind in value:
            return kind
    return "task" if "command" in value else None


State = Annotated[
    Annotated[TaskState, Tag("task")]
    | Annotated[ChoiceState, Tag("choice")]
    | Annotated[ParallelState, Tag("parallel")]
    | Annotated[FinalState, Tag("final")],
    Discriminator(
        _state_kind,
        custom_error_type="state_kind",
        custom_error_message=("a state needs 'command' (task), 'choice', 'parallel' or 'final'"),
    ),
]

ActionState = TaskState | ParallelState


class MachineDefinition(_Model):
    machine: Name
    version: int = Field(ge=1)
    initial: str
    description: str | None = None
    states: dict[Name, State] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_reserved_names(self) -> Self:
        if COMPENSATE in self.states:
            raise ValueError(f"'{COMPENSATE}' is a reserved target and cannot name a state")
        return self

    @property
    def key(self) -> tuple[str, int]:
        return (self.machine, self.version)

    def content_hash(self) -> str:
        """Hash of the definition's meaning, independent of YAML layout and comments."""
        canonical = json.dumps(self.snapshot(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def snapshot(self) -> dict[str, Any]:
        """The definition as written (defaults left out), fit to store and to validate again."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)

    def services(self) -> set[str]:
        """Every service this machine sends commands or compensations to."""
        found: set[str] = set()
        for state in self.states.values():
            if isinstance(state, TaskState):
                found.add(state.command.service)
                if state.compensation:
                    found.add(state.compensation.service)
            elif isinstance(state, ParallelState):
                for branch in state.parallel.values():
                    found.add(branch.command.service)
                    if branch.compensation:
                        found.add(branch.compensation.service)
        return found

    def step(self, step: str) -> tuple[str, TaskState | Branch] | None:
        """The state name and the task or branch behind an action step id."""
        state_name, _, branch_name = step.partition(".")
        state = self.states.get(state_name)
        if isinstance(state, TaskState) and not branch_name:
            return state_name, state
        if isinstance(state, ParallelState) and branch_name in state.parallel:
            return state_name, state.parallel[branch_name]
        return None
