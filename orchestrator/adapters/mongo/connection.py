"""Connecting to MongoDB: the client's options, the first ping, and what kind of server answers.

The first connect fails fast with `ConfigurationError` (a bad URL, refused credentials, no
server); later calls keep the driver's 30 s server selection, which rides out an election. The
server's `buildInfo` tells FerretDB v1 apart (see `ferretdb`), and its topology whether it can
retry writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, NamedTuple

import pymongo
import structlog
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure, PyMongoError

from orchestrator.adapters.mongo.documents import Document, driver_reason
from orchestrator.adapters.mongo.events import ServerStateLog
from orchestrator.adapters.mongo.ferretdb import FERRETDB_POOL_SIZE, is_ferretdb_v1
from orchestrator.errors import ConfigurationError
from orchestrator.logs import redact

log = structlog.get_logger("sagawire.store")

DEFAULT_DATABASE = "sagawire"


class Connection(NamedTuple):
    client: AsyncMongoClient[Document]
    database: str
    server_state: ServerStateLog
    """The server's losses and returns as the driver saw them."""
    ferretdb_v1: bool


async def connect(
    url: str,
    database: str | None,
    *,
    # The driver's own timeout (below), not asyncio's: its error says why it failed.
    timeout: float,  # noqa: ASYNC109
) -> Connection:
    """Connect and ping; `ConfigurationError` at once when the server cannot be reached.

    The database is `database`, else the URL's path, else `sagawire`.
    """
    where = redact(url)
    try:
        client, events = _client(url, where)
    except (PyMongoError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"invalid MongoDB URL {where}: {driver_reason(exc)}") from exc
    try:
        # A timeout for these calls only (it bounds server selection too): later calls keep
        # the client's default serverSelectionTimeoutMS (30 s), which rides out an election.
        with pymongo.timeout(timeout):
            await client.admin.command("ping")
            build = await client.admin.command("buildInfo")
    except OperationFailure as exc:
        await _close_failed(client)
        raise ConfigurationError(
            f"MongoDB at {where} refused the connection: {driver_reason(exc)}; "
            "check the user, password and authSource in the URL"
        ) from exc
    except PyMongoError as exc:
        await _close_failed(client)
        raise ConfigurationError(
            f"cannot reach MongoDB at {where}: {driver_reason(exc)}; "
            "is it running? see `make services`"
        ) from exc
    name = database or client.get_default_database(DEFAULT_DATABASE).name
    ferretdb_v1 = is_ferretdb_v1(build)
    options: dict[str, Any] = {}
    if ferretdb_v1 and "maxpoolsize=" not in url.lower():
        options["maxPoolSize"] = FERRETDB_POOL_SIZE
        log.info("ferretdb_pool_limited", url=where, max_pool_size=FERRETDB_POOL_SIZE)
    if client.options.retry_writes and not _retryable_writes(client):
        options["retryWrites"] = False
        log.info("mongodb_retry_writes_off", url=where, reason="standalone server")
    if options:
        await client.close()
        client, events = _client(url, where, options)
    return Connection(client, name, events, ferretdb_v1)


def _client(
    url: str, where: str, options: dict[str, Any] | None = None
) -> tuple[AsyncMongoClient[Document], ServerStateLog]:
    """A client with the store's options (and `options`) and a log of its server's state."""
    events = ServerStateLog(where)
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        url, tz_aware=True, tzinfo=dt.UTC, event_listeners=[events], **(options or {})
    )
    return client, events


def _retryable_writes(client: AsyncMongoClient[Document]) -> bool:
    """Whether the server the client has found can retry writes (a replica set or mongos).

    A standalone server (FerretDB is one) cannot, and there PyMongo 4.20's retry of a write whose
    first try found the connection pool paused does harm: on the second try it checks out a
    connection and raises the first try's error from inside that checkout, which the driver takes
    for a new network error on a current connection. It marks the server unknown and pauses the
    pool again, right after the monitor made it ready. With many writes waiting for the server
    after an outage, each return of the server is undone at once, and the store can stay on
    "connection pool paused" for minutes. With `retryWrites=false` a write fails on its first
    try, its error is counted stale, and the daemon's own retry writes again once the pool is
    ready.
    """
    servers = client.topology_description.server_descriptions().values()
    return any(server.retryable_writes_supported for server in servers)


async def _close_failed(client: AsyncMongoClient[Document]) -> None:
    """Close a client whose server did not answer.

    Its monitor retries the connection at once while a server is being selected; PyMongo 4.20
    leaks the socket of a connection attempt that `close()` cancels (PYTHON-5867). Attempts to
    an unreachable server end within milliseconds, and after that the monitor sleeps.
    """
    await asyncio.sleep(0.05)
    await client.close()
