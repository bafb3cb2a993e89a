"""`/v1/machines`: the machines the daemon stored, their counts and diagrams; pause and resume."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from orchestrator.gateway.auth import Scope
from orchestrator.gateway.deps import Caller, Service, require
from orchestrator.gateway.schemas import MachineDetail, MachineSummary, PauseAction

MachineName = Annotated[str, Path(min_length=1, max_length=200)]


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
