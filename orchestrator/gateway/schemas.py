"""The JSON the HTTP API takes and gives, as pydantic models (its OpenAPI document comes from
these)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.adapters.mongo import SagaSummary
from orchestrator.core.diagram import render
from orchestrator.gateway.service import MachineView


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    saga_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The saga's id (default: a new one). Starting again with the same id and "
        "data changes nothing; with other data it is refused (409).",
    )
    data: dict[str, Any] = Field(default_factory=dict, description="The saga's start data.")


class StartAccepted(BaseModel):
    saga_id: str
    existed: bool = Field(description="The saga was there already, started with the same data.")
    location: str


class OperatorAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operator: str | None = Field(
        default=None, max_length=200, description="Who asks (default: the API's caller)."
    )
    reason: str | None = Field(default=None, max_length=1000, description="Why, for the history.")
    wait: float = Field(default=15.0, gt=0, le=120, description="Seconds to wait for the verdict.")


class AbortAction(OperatorAction):
    compensate: bool = Field(default=False, description="Undo the steps done (else stop).")


class PauseAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operator: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=1000)


class SagaListItem(BaseModel):
    saga_id: str
    machine: str
    machine_version: int
    status: str
    states: list[str]
    label: str | None
    deadline: dt.datetime | None
    flagged: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, summary: SagaSummary) -> SagaListItem:
        return cls.model_validate(summary, from_attributes=True)


class SagaList(BaseModel):
    total: int = Field(description="Sagas matching the filter, all pages together.")
    page: int
    limit: int
    sagas: list[SagaListItem]


class PauseView(BaseModel):
    by: str
    at: dt.datetime
    reason: str | None


class MachineSummary(BaseModel):
    name: str
    versions: list[int]
    latest_version: int
    description: str | None
    states: list[str]
    services: list[str]
    counts: dict[str, int] = Field(description="Sagas by status.")
    paused: PauseView | None

    @classmethod
    def of(cls, view: MachineView) -> MachineSummary:
        latest = view.latest
        pause = None
        if view.pause is not None:
            pause = PauseView(by=view.pause.by, at=view.pause.at, reason=view.pause.reason)
        return cls(
            name=view.name,
            versions=[d.version for d in view.versions],
            latest_version=latest.version,
            description=latest.description,
            states=list(latest.states),
            services=sorted(latest.services()),
            counts=view.counts,
            paused=pause,
        )


class MachineDetail(MachineSummary):
    definition: dict[str, Any] = Field(description="The latest version, as stored.")
    labels: dict[str, str] = Field(description="State -> business label, where one is set.")
    mermaid: str = Field(description="The diagram, Mermaid stateDiagram-v2.")
    dot: str = Field(description="The diagram, Graphviz dot.")

    @classmethod
    def of(cls, view: MachineView) -> MachineDetail:
        latest = view.latest
        return cls(
            **MachineSummary.of(view).model_dump(),
            definition=latest.snapshot(),
            labels={name: s.label for name, s in latest.states.items() if s.label},
            mermaid=render(latest, "mermaid"),
            dot=render(latest, "dot"),
        )


class MachineStats(BaseModel):
    name: str
    counts: dict[str, int] = Field(
        description="Sagas by status, every status present: `failed` and `compensated` are the "
        "failures, `running` and `compensating` the live ones."
    )
    states: dict[str, dict[str, int]] = Field(
        description="State -> status -> sagas whose current state it is (a finished saga: the "
        "state it ended in, or was compensated from)."
    )
    stuck: int = Field(description="Unfinished sagas past a deadline by `stuck_after`, or flagged.")
    stuck_after: float
    step_latency_ms: dict[str, float | None] = Field(
        description="p50, p95, p99 of command sent to reply, as `sagawire stats` reports them."
    )
    steps_sampled: int
    dead_letters: dict[str, int | None] = Field(
        description="Messages in the DLQ of each service's commands and replies; null: the "
        "queue is not declared."
    )
    paused: PauseView | None


class PathEdgeView(BaseModel):
    source: str
    target: str
    label: str | None = Field(description="The transition's label, when the history tells it.")


class SagaPathView(BaseModel):
    saga_id: str
    machine: str
    machine_version: int
    visited: list[str] = Field(description="Diagram nodes reached, first reached first.")
    edges: list[PathEdgeView] = Field(description="Transitions taken, between diagram nodes.")
    current: str | None = Field(description="The node the saga is at; null once finished.")
    complete: bool = Field(description="False when older history was dropped.")


class WhoAmI(BaseModel):
    auth: bool = Field(description="False when the gateway runs with --no-auth.")
    scope: str = Field(description="What the caller's token allows: read or operator.")
