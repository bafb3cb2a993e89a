"""The HTTP API on Starlette/FastAPI: `create_app(service, tokens)`.

    POST /v1/machines/{machine}/sagas        start a saga (202, Location)       operator
    GET  /v1/sagas/{saga_id}                 one saga: state, pending, data...  read
    GET  /v1/sagas                           the filters of `sagas list`, paged read
    POST /v1/sagas/{saga_id}/abort|retry|resume  the daemon's verdict           operator
    GET  /v1/machines, /v1/machines/{name}   with counts and diagrams           read
    GET  /v1/machines/{name}/stats           counts by status and state, latency, DLQs  read
    GET  /v1/machines/{name}/diagram.svg     drawn by Graphviz                  read
    GET  /v1/sagas/{saga_id}/path            its way through the diagram        read
    POST /v1/machines/{name}/pause|resume                                       operator
    GET  /v1/whoami                          the caller's scope                 read
    GET  /openapi.json, /healthz, / and /monitor/ (the flow monitor's page)

Errors are `{"detail": "..."}` with a status that says what kind: 401 no or unknown token, 403
a token without the scope, 404 unknown saga or machine, 409 refused (paused machine, saga with
other data, the daemon's refusal), 422 invalid input, 503 no daemon (or no Graphviz for a
diagram), 504 no verdict in time.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from orchestrator.gateway.auth import Scope, Tokens
from orchestrator.gateway.deps import BearerToken, TokensDep, require
from orchestrator.gateway.graphviz import Diagrams
from orchestrator.gateway.machines_api import machines_router
from orchestrator.gateway.monitor_page import mount_monitor
from orchestrator.gateway.sagas_api import sagas_router
from orchestrator.gateway.schemas import WhoAmI
from orchestrator.gateway.service import ApiProblem, SagaService
from orchestrator.gateway.stats import MachineStatsReader


def create_app(
    service: SagaService, tokens: Tokens, *, diagrams: Diagrams | None = None
) -> FastAPI:
    app = FastAPI(
        title="Sagawire",
        summary="Start, read and operate sagas; read and pause machines.",
        version="1",
        docs_url=None,  # the interactive pages load scripts from a CDN; the document is served
        redoc_url=None,
    )
    app.state.service = service
    app.state.tokens = tokens
    app.state.stats = MachineStatsReader(service)
    app.state.diagrams = diagrams or Diagrams()

    @app.exception_handler(ApiProblem)
    async def problem(_: Request, exc: ApiProblem) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/whoami", tags=["session"], dependencies=[require(Scope.READ)])
    async def whoami(known: TokensDep, token: BearerToken) -> WhoAmI:
        """What the caller's token allows (the flow monitor shows it)."""
        scope = known.scope_of(token)
        return WhoAmI(auth=not known.open, scope=(scope or Scope.READ).value)

    app.include_router(sagas_router())
    app.include_router(machines_router())
    mount_monitor(app)
    return app
