"""`/v1/machines`: the machines the daemon stored, their counts, figures and diagrams; pause
and resume."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from orchestrator.core.definition import MachineDefinition
from orchestrator.core.diagram import render
from orchestrator.gateway.auth import Scope
from orchestrator.gateway.deps import Caller, DiagramCache, Service, Stats, require
from orchestrator.gateway.graphviz import DiagramUnavailable
from orchestrator.gateway.schemas import MachineDetail, MachineStats, MachineSummary, PauseAction
from orchestrator.gateway.service import ApiProblem, MachineView
from orchestrator.gateway.stats import DEFAULT_SAMPLE

MachineName = Annotated[str, Path(min_length=1, max_length=200)]
SVG_HEADERS = {
    # Opened on its own, the drawing may run nothing and load nothing.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=300",  # a stored machine version never changes
}


def _version(view: MachineView, version: int | None) -> MachineDefinition:
    """The machine's `version` (default: the latest); 404 when it has no such version."""
    if version is None:
        return view.latest
    for definition in view.versions:
        if definition.version == version:
            return definition
    known = ", ".join(str(d.version) for d in view.versions)
    raise ApiProblem(404, f"machine {view.name!r} has no version {version}; it has {known}")


def machines_router() -> APIRouter:
    router = APIRouter(prefix="/v1/machines", tags=["machines"])

    @router.get("", dependencies=[require(Scope.READ)])
    async def list_machines(service: Service) -> list[MachineSummary]:
        """Every machine the daemon stored: versions, states, services, sagas by status, pause."""
        return [MachineSummary.of(view) for view in await service.machines()]

    @router.get("/{name}", dependencies=[require(Scope.READ)], responses={404: {}})
    async def get_machine(name: MachineName, service: Service) -> MachineDetail:
        """One machine: its latest version, sagas by status, and its diagram."""
        return MachineDetail.of(await service.machine(name))

    @router.get("/{name}/stats", dependencies=[require(Scope.READ)], responses={404: {}, 503: {}})
    async def machine_stats(
        name: MachineName,
        stats: Stats,
        sample: Annotated[
            int, Query(ge=1, le=100_000, description="Latencies from this many sagas' histories.")
        ] = DEFAULT_SAMPLE,
        stuck_after: Annotated[float, Query(ge=0, description="Seconds past a deadline.")] = 60.0,
    ) -> MachineStats:
        """Sagas by status and by current state, stuck sagas, step latency p50/p95/p99 (as
        `sagawire stats`), and the dead letters of the machine's services."""
        return await stats.stats(name, sample=sample, stuck_after=stuck_after)

    @router.get(
        "/{name}/diagram.svg",
        dependencies=[require(Scope.READ)],
        response_class=Response,
        responses={
            200: {"content": {"image/svg+xml": {}}, "description": "Graphviz's drawing."},
            404: {},
            503: {"description": "Graphviz (`dot`) is missing, failed or too slow."},
        },
    )
    async def diagram_svg(
        name: MachineName,
        service: Service,
        diagrams: DiagramCache,
        version: Annotated[int | None, Query(ge=1, description="Default: the latest.")] = None,
    ) -> Response:
        """The machine's diagram drawn by Graphviz: each state a node titled by its name."""
        chosen = _version(await service.machine(name), version)
        try:
            svg = await diagrams.svg(name, chosen.version, render(chosen, "dot"))
        except DiagramUnavailable as exc:
            raise ApiProblem(503, f"cannot draw the diagram: {exc}") from None
        return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)

    @router.post("/{name}/pause", dependencies=[require(Scope.OPERATOR)], responses={404: {}})
    async def pause(
        name: MachineName, service: Service, who: Caller, action: PauseAction | None = None
    ) -> MachineSummary:
        """Refuse new sagas of the machine; running ones go on."""
        given = action or PauseAction()
        view = await service.pause(name, by=given.operator or who, reason=given.reason)
        return MachineSummary.of(view)

    @router.post(
        "/{name}/resume", dependencies=[require(Scope.OPERATOR)], responses={404: {}, 409: {}}
    )
    async def resume(name: MachineName, service: Service) -> MachineSummary:
        """Let new sagas of a paused machine start again."""
        return MachineSummary.of(await service.resume(name))

    return router
