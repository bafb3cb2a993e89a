"""`/v1/sagas` and starting sagas: `sagas_router(...)`, the routes on a `SagaService`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.adapters.mongo import SagaFilter
from orchestrator.core.durations import time_or_age
from orchestrator.core.saga import SagaStatus
from orchestrator.gateway.auth import Scope
from orchestrator.gateway.deps import Caller, Service, Traceparent, require
from orchestrator.gateway.schemas import (
    AbortAction,
    OperatorAction,
    PathEdgeView,
    SagaList,
    SagaListItem,
    SagaPathView,
    StartAccepted,
    StartRequest,
)
from orchestrator.gateway.service import ApiProblem, SagaService
from orchestrator.gateway.views import saga_path

SagaId = Annotated[str, Path(min_length=1, max_length=200)]


def _time(text: str | None, name: str, now: dt.datetime) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return time_or_age(text, now)
    except ValueError as exc:
        raise ApiProblem(422, f"{name}: {exc}") from None


class SagaQuery(BaseModel):
    """The filters of `sagawire sagas list`, as query parameters."""

    model_config = ConfigDict(extra="forbid")
    machine: str | None = None
    status: list[SagaStatus] = Field(default_factory=list, description="Repeat for several.")
    state: str | None = None
    label: str | None = None
    since: str | None = Field(default=None, description="Updated at or after: ISO time or age.")
    until: str | None = Field(default=None, description="Updated before: ISO time or age.")
    stuck: bool = Field(default=False, description="Past a deadline by stuck_after, or flagged.")
    stuck_after: float = Field(default=60.0, ge=0)
    limit: int = Field(default=50, ge=1, le=1000)
    page: int = Field(default=1, ge=1)

    def filter(self, now: dt.datetime) -> SagaFilter:
        return SagaFilter(
            machine=self.machine,
            statuses=tuple(self.status),
            state=self.state,
            label=self.label,
            since=_time(self.since, "since", now),
            until=_time(self.until, "until", now),
            stuck_before=now - dt.timedelta(seconds=self.stuck_after) if self.stuck else None,
        )


def sagas_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["sagas"])

    @router.post(
        "/machines/{machine}/sagas",
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[require(Scope.OPERATOR)],
        responses={404: {}, 409: {}, 422: {}},
    )
    async def start_saga(
        machine: Annotated[str, Path(min_length=1, max_length=200)],
        request: StartRequest,
        response: Response,
        service: Service,
        traceparent: Traceparent,
        wait: Annotated[
            float,
            Query(ge=0, le=60, description="Seconds to wait for the daemon to create it."),
        ] = 0.0,
    ) -> StartAccepted:
        """Start a saga of `machine`: accepted once the broker has the request (202)."""
        saga_id = request.saga_id or uuid.uuid4().hex
        started = await service.start(
            machine, request.data, saga_id=saga_id, traceparent=traceparent, wait=wait
        )
        location = f"/v1/sagas/{saga_id}"
        response.headers["Location"] = location
        return StartAccepted(saga_id=started.saga_id, existed=started.existed, location=location)

    @router.get("/sagas/{saga_id}", dependencies=[require(Scope.READ)], responses={404: {}})
    async def get_saga(saga_id: SagaId, service: Service) -> dict[str, Any]:
        """The saga as stored: status, state, pending steps with deadlines, data, outbox and
        history."""
        saga = await service.saga(saga_id)
        return saga.model_dump(mode="json")

    @router.get("/sagas/{saga_id}/path", dependencies=[require(Scope.READ)], responses={404: {}})
    async def get_saga_path(saga_id: SagaId, service: Service) -> SagaPathView:
        """The saga's way through its machine, as node names of the machine's diagram."""
        saga = await service.saga(saga_id)
        path = saga_path(saga)
        return SagaPathView(
            saga_id=saga.saga_id,
            machine=saga.machine,
            machine_version=saga.machine_version,
            visited=path.visited,
            edges=[PathEdgeView.model_validate(edge, from_attributes=True) for edge in path.edges],
            current=path.current,
            complete=path.complete,
        )

    @router.get("/sagas", dependencies=[require(Scope.READ)])
    async def list_sagas(service: Service, query: Annotated[SagaQuery, Query()]) -> SagaList:
        """Sagas matching every filter given, most recently updated first, a page at a time."""
        found = await service.sagas(
            query.filter(dt.datetime.now(dt.UTC)), limit=query.limit, page=query.page
        )
        return SagaList(
            total=found.total,
            page=query.page,
            limit=query.limit,
            sagas=[SagaListItem.of(summary) for summary in found.sagas],
        )

    async def act(
        verb: Literal["retry", "resume", "abort"],
        saga_id: str,
        action: OperatorAction,
        service: SagaService,
        who: str,
        *,
        compensate: bool = False,
    ) -> dict[str, Any]:
        saga = await service.operate(
            verb,
            saga_id,
            operator=action.operator or who,
            reason=action.reason,
            compensate=compensate,
            wait=action.wait,
        )
        return saga.model_dump(mode="json")

    operator_only = [require(Scope.OPERATOR)]
    verdicts: dict[int | str, dict[str, Any]] = {404: {}, 409: {}, 503: {}, 504: {}}

    @router.post("/sagas/{saga_id}/retry", dependencies=operator_only, responses=verdicts)
    async def retry(
        saga_id: SagaId, service: Service, who: Caller, action: OperatorAction | None = None
    ) -> dict[str, Any]:
        """Send the pending steps' commands again, as new attempts of the same visit; the saga
        once the daemon applied it."""
        return await act("retry", saga_id, action or OperatorAction(), service, who)

    @router.post("/sagas/{saga_id}/resume", dependencies=operator_only, responses=verdicts)
    async def resume(
        saga_id: SagaId, service: Service, who: Caller, action: OperatorAction | None = None
    ) -> dict[str, Any]:
        """Resume a compensation that gave up (a failed saga)."""
        return await act("resume", saga_id, action or OperatorAction(), service, who)

    @router.post("/sagas/{saga_id}/abort", dependencies=operator_only, responses=verdicts)
    async def abort(
        saga_id: SagaId, service: Service, who: Caller, action: AbortAction | None = None
    ) -> dict[str, Any]:
        """Stop the saga where it is (`aborted`), or with `compensate` undo its steps first."""
        given = action or AbortAction()
        return await act("abort", saga_id, given, service, who, compensate=given.compensate)

    return router
