"""`sagawire gateway`: the HTTP API (and flow monitor) beside the daemon, on uvicorn."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import structlog
import typer

from orchestrator.cli.app import app
from orchestrator.cli.common import AmqpUrl, MongoUrl, fail, load_settings
from orchestrator.errors import ConfigurationError, StoreError
from orchestrator.logs import redact
from orchestrator.settings import Settings
from participants_sdk.errors import BrokerError

if TYPE_CHECKING:
    from orchestrator.gateway.auth import Tokens

log = structlog.get_logger("sagawire.gateway")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  SAGAWIRE_API_TOKENS='ops-0123456789abcdef:operator,dash-0123456789abcdef:read' "
        "sagawire gateway --host 0.0.0.0\n\n"
        "  sagawire gateway --no-auth          (local use: no token needed)"
    ),
)
def gateway(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (env SAGAWIRE_GATEWAY_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (env SAGAWIRE_GATEWAY_PORT; default 8000).")
    ] = None,
    auth: Annotated[
        bool | None,
        typer.Option(
            "--auth/--no-auth",
            help="Require a bearer token from SAGAWIRE_API_TOKENS (default); --no-auth lets "
            "anyone who reaches the port read and act: for local use only.",
        ),
    ] = None,
    amqp_url: AmqpUrl = None,
    mongodb_url: MongoUrl = None,
) -> None:
    """Serve the HTTP API beside a running daemon: start, read and operate sagas, pause
    machines. Its OpenAPI document is at /openapi.json; the flow monitor, a web page of live
    counts, diagrams and actions, at /monitor/ (diagrams need Graphviz's `dot`)."""
    settings = load_settings(
        gateway_host=host,
        gateway_port=port,
        api_auth=auth,
        amqp_url=amqp_url,
        mongodb_url=mongodb_url,
    )
    tokens = _tokens(settings)
    try:
        asyncio.run(_serve(settings, tokens))
    except (BrokerError, StoreError, ConfigurationError, OSError) as exc:
        raise fail(str(exc)) from None


def _tokens(settings: Settings) -> Tokens:
    from orchestrator.gateway.auth import Tokens, TokenSyntaxError  # noqa: PLC0415 - light CLI

    if not settings.api_auth:
        return Tokens(open=True)
    if settings.api_tokens is None or not settings.api_tokens.get_secret_value().strip():
        raise fail(
            "no API tokens: set SAGAWIRE_API_TOKENS='TOKEN:operator,TOKEN:read' (16 or more "
            "characters each), or pass --no-auth for local use",
            code=2,
        )
    try:
        return Tokens.parse(settings.api_tokens.get_secret_value())
    except TokenSyntaxError as exc:
        raise fail(f"SAGAWIRE_API_TOKENS: {exc}", code=2) from None


async def _serve(settings: Settings, tokens: Tokens) -> None:
    import uvicorn  # noqa: PLC0415 - only this command needs it

    from orchestrator.gateway.app import create_app  # noqa: PLC0415
    from orchestrator.gateway.service import SagaService  # noqa: PLC0415

    async with SagaService.connected(settings) as service:
        config = uvicorn.Config(
            create_app(service, tokens),
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_config=None,
            access_log=False,
        )
        log.info(
            "gateway_listening",
            host=settings.gateway_host,
            port=settings.gateway_port,
            auth="off" if tokens.open else f"{len(tokens.scopes)} tokens",
            monitor=f"http://{settings.gateway_host}:{settings.gateway_port}/monitor/",
            mongodb=redact(settings.mongodb_url),
            amqp=redact(settings.amqp_url),
        )
        if tokens.open:
            log.warning("gateway_without_auth", detail="every caller may read and act on sagas")
        await uvicorn.Server(config).serve()
