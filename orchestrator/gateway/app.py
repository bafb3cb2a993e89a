"""The HTTP API on Starlette/FastAPI: `create_app(service, tokens)`.

    POST /v1/machines/{machine}/sagas        start a saga (202, Location)       operator
    GET  /v1/sagas/{saga_id}                 one saga: state, pending, data...  read
    GET  /v1/sagas                           the filters of `sagas list`, paged read
    POST /v1/sagas/{saga_id}/abort|retry|resume  the daemon's verdict           operator
    GET  /v1/machines, /v1/machines/{name}   with counts and diagrams           read
    POST /v1/machines/{name}/pause|resume                                       operator
    GET  /openapi.json, /healthz

Errors are `{"detail": "..."}` with a status that says what kind: 401 no or unknown token, 403
a token without the scope, 404 unknown saga or machine, 409 refused (paused machine, saga with
other data, the daemon's refusal), 422 invalid input, 503 no daemon, 504 no verdict in time.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from orchestrator.gateway.auth import Tokens
from orchestrator.gateway.machines_api import machines_router
from orchestrator.gateway.sagas_api import sagas_router
from orchestrator.gateway.service import ApiProblem, SagaService


def create_app(service: SagaService, tokens: Tokens) -> FastAPI:
    app = FastAPI(
        title="Sagawire",
        summary="Start, read and operate sagas; read and pause machines.",
        version="1",
        docs_url=None,  # the interactive pages load scripts from a CDN; the document is served
        redoc_url=None,
    )
    app.state.service = service
    app.state.tokens = tokens

    @app.exception_handler(ApiProblem)
    async def problem(_: Request, exc: ApiProblem) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(sagas_router())
    app.include_router(machines_router())
    return app
