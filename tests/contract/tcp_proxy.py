"""`TcpProxy`: a local TCP forwarder whose server side can be cut and restored, or held.

Cutting it looks to a client like its server going down: every open connection is closed and new
ones are refused, until `restore()` listens on the same port again. The server itself keeps
running, so other tests using it are not disturbed.

Holding it (`hold()`) stalls one direction only: what the server sends still reaches the
clients, what the clients send is read, counted and never forwarded. Between the daemon and
RabbitMQ that means deliveries still arrive while publishes, acks and heartbeats do not: every
command the daemon saves then waits for a confirm that does not come. Holding for long makes
RabbitMQ close the connection for missed heartbeats (60 s by default); tests hold for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        """The local port, chosen by `start()`."""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.holding = False
        self.held_bytes = 0
        """Bytes from clients held back (never forwarded) since the last `hold()`."""

    async def start(self) -> int:
        await self._listen()
        return self.port

    async def cut(self) -> None:
        """Stop listening (new connections are refused) and close every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def hold(self) -> None:
        """From now on forward nothing the clients send; what the server sends flows on."""
        self.holding = True
        self.held_bytes = 0

    async def restore(self) -> None:
        await self._listen()

    async def close(self) -> None:
        await self.cut()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection(*self.target)
        except OSError:
            client_out.close()
            return
        self._writers |= {client_out, server_out}
        for source, sink, holds in ((client_in, server_out, True), (server_in, client_out, False)):
            pump = asyncio.get_running_loop().create_task(self._pump(source, sink, holds=holds))
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
