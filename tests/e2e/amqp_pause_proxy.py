"""`HoldingProxy`: a local TCP forwarder that can hold back what its clients send.

Put between the daemon and RabbitMQ, `hold()` makes the broker look stalled in one direction
only: what RabbitMQ sends (deliveries, confirms of what was sent before) still reaches the
daemon, but what the daemon sends (publishes, acks, heartbeats) is read, counted and never
forwarded. The daemon then goes on deciding and saving, and every command it saves waits for a
confirm that does not come: a crash at that moment leaves the commands stored in the outbox,
unpublished, and the deliveries it held unacked go back to their queues.

`cut()` drops every connection, as a crash of the daemon would. A copy of
`tests/contract/tcp_proxy.py`'s forwarder with the hold added; that one stays as the contract
tests use it. Holding for long would make RabbitMQ close the connection for missed heartbeats
(the default interval is 60 s); the tests hold for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib


class HoldingProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        """The local port, chosen by `start()`."""
        self.holding = False
        self.held_bytes = 0
        """Bytes from clients held back (never forwarded) since the last `hold()`."""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def hold(self) -> None:
        """From now on forward nothing clients send; what the server sends flows on."""
        self.holding = True
        self.held_bytes = 0

    async def cut(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def close(self) -> None:
        await self.cut()

    async def _accept(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection(*self.target)
        except OSError:
            client_out.close()
            return
        self._writers |= {client_out, server_out}
        loop = asyncio.get_running_loop()
        for pump in (
            loop.create_task(self._pump(client_in, server_out, holds=True)),
            loop.create_task(self._pump(server_in, client_out, holds=False)),
        ):
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, holds: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if holds and self.holding:
                    self.held_bytes += len(data)
                    continue
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()
            self._writers.discard(sink)
            with contextlib.suppress(OSError):
                await sink.wait_closed()
