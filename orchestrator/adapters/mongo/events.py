"""`ServerStateLog`: logs when the store loses and regains its MongoDB server.

PyMongo reports each change of a server's description and each clear and re-open of its
connection pool. Only those transitions are logged (not every heartbeat or checkout), so an
outage shows up as one `mongodb_server_lost` line with the driver's reason, followed by
`mongodb_server_back` once the monitor reaches the server again. `changes` counts them, for tests
and diagnosis.
"""

from __future__ import annotations

from collections import Counter

import structlog
from pymongo import monitoring

log = structlog.get_logger("sagawire.store")

_CheckOutStarted = monitoring.ConnectionCheckOutStartedEvent


class ServerStateLog(monitoring.ServerListener, monitoring.ConnectionPoolListener):
    """Pass as `event_listeners=[...]` to `AsyncMongoClient`; every callback is synchronous."""

    def __init__(self, where: str) -> None:
        self.where = where
        """The server's URL with its password redacted."""
        self.changes: Counter[str] = Counter()
        """Transitions seen: `found` (first), `lost`, `back`, `pool_cleared`, `pool_ready`."""

    # -- ServerListener ----------------------------------------------------------------------

    def opened(self, event: monitoring.ServerOpeningEvent) -> None:
        pass

    def closed(self, event: monitoring.ServerClosedEvent) -> None:
        pass

    def description_changed(self, event: monitoring.ServerDescriptionChangedEvent) -> None:
        before, after = event.previous_description, event.new_description
        if before.is_server_type_known == after.is_server_type_known:
            return
        if after.is_server_type_known and not self.changes["found"]:
            self.changes["found"] += 1  # the first discovery, at connect
        elif after.is_server_type_known:
            self.changes["back"] += 1
            log.info("mongodb_server_back", url=self.where, server_type=after.server_type_name)
        else:
            self.changes["lost"] += 1
            reason = str(after.error) if after.error is not None else "unknown"
            log.warning("mongodb_server_lost", url=self.where, error=reason)

    # -- ConnectionPoolListener --------------------------------------------------------------

    def pool_cleared(self, event: monitoring.PoolClearedEvent) -> None:
        self.changes["pool_cleared"] += 1
        log.info("mongodb_pool_paused", url=self.where, server=_address(event.address))

    def pool_ready(self, event: monitoring.PoolReadyEvent) -> None:
        self.changes["pool_ready"] += 1
        log.info("mongodb_pool_ready", url=self.where, server=_address(event.address))

    def pool_created(self, event: monitoring.PoolCreatedEvent) -> None:
        pass

    def pool_closed(self, event: monitoring.PoolClosedEvent) -> None:
        pass

    def connection_created(self, event: monitoring.ConnectionCreatedEvent) -> None:
        pass

    def connection_ready(self, event: monitoring.ConnectionReadyEvent) -> None:
        pass

    def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None:
        pass

    def connection_check_out_started(self, event: _CheckOutStarted) -> None:
        pass

    def connection_check_out_failed(self, event: monitoring.ConnectionCheckOutFailedEvent) -> None:
        pass

    def connection_checked_out(self, event: monitoring.ConnectionCheckedOutEvent) -> None:
        pass

    def connection_checked_in(self, event: monitoring.ConnectionCheckedInEvent) -> None:
        pass


def _address(address: tuple[str, int | None]) -> str:
    host, port = address
    return host if port is None else f"{host}:{port}"
