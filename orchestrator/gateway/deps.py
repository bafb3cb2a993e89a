"""What the routes depend on: the service, the caller's token and scope, the trace header."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orchestrator.gateway.auth import Scope, Tokens
from orchestrator.gateway.graphviz import Diagrams
from orchestrator.gateway.service import ApiProblem, SagaService
from orchestrator.gateway.stats import MachineStatsReader

_bearer = HTTPBearer(auto_error=False, description="A token from SAGAWIRE_API_TOKENS.")


def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The token's caller name for histories; checks nothing (see `require`)."""
    tokens: Tokens = request.app.state.tokens
    if tokens.open:
        return "api (no auth)"
    return f"api ({tokens.scope_of(credentials.credentials if credentials else None)})"


def require(needed: Scope) -> Any:  # noqa: ANN401 - what Depends() returns
    """A dependency refusing the request unless its bearer token grants `needed`."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        tokens: Tokens = request.app.state.tokens
        allowed = tokens.allows(credentials.credentials if credentials else None, needed)
        if allowed is None:
            raise ApiProblem(401, "a bearer token is needed (Authorization: Bearer TOKEN)")
        if not allowed:
            raise ApiProblem(403, f"this token's scope does not allow {needed.value} requests")

    return Depends(check)


def service_of(request: Request) -> SagaService:
    service: SagaService = request.app.state.service
    return service


def stats_of(request: Request) -> MachineStatsReader:
    stats: MachineStatsReader = request.app.state.stats
    return stats


def diagrams_of(request: Request) -> Diagrams:
    diagrams: Diagrams = request.app.state.diagrams
    return diagrams


def tokens_of(request: Request) -> Tokens:
    tokens: Tokens = request.app.state.tokens
    return tokens


def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return credentials.credentials if credentials else None


def traceparent_header(
    traceparent: Annotated[
        str | None, Header(description="W3C trace context for the saga (start only).")
    ] = None,
) -> str | None:
    return traceparent


Service = Annotated[SagaService, Depends(service_of)]
Stats = Annotated[MachineStatsReader, Depends(stats_of)]
DiagramCache = Annotated[Diagrams, Depends(diagrams_of)]
TokensDep = Annotated[Tokens, Depends(tokens_of)]
BearerToken = Annotated[str | None, Depends(bearer_token)]
Caller = Annotated[str, Depends(caller)]
Traceparent = Annotated[str | None, Depends(traceparent_header)]
