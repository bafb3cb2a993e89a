"""One AMQP connection with its publisher channel: what `RabbitBroker` replaces whole when lost.

aio-pika's robust connection reopens channels and consumers by itself, but after a broker
restart under load it sometimes never finished: the connection came back and no consumer did,
with nothing logged. So Sagawire reconnects on its own terms: a lost connection is dropped, a
new `Link` is opened, every consumer is attached to it again, each step bounded by a timeout,
and the whole is retried until the broker answers (see `RabbitBroker._keep_connected`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aio_pika

from participants_sdk import amqp

if TYPE_CHECKING:
    import aiormq.abc
    from aio_pika.abc import AbstractChannel, AbstractConnection


class Link:
    """A connection, and the channel (publisher confirms, `mandatory` returns) publishes use."""

    def __init__(self, connection: AbstractConnection, publisher: AbstractChannel) -> None:
        self.connection = connection
        self.publisher = publisher
        self.lost = asyncio.Event()
        """Set once the connection closed, whatever closed it."""
        self._reopening = asyncio.Lock()
        connection.close_callbacks.add(self._on_close)

    @classmethod
    async def open(cls, url: str, *, name: str, timeout: float) -> Link:  # noqa: ASYNC109 - the connect timeout, a setting
        """Connect and open the publisher channel, within `timeout` seconds each."""
        connection = await aio_pika.connect(
            url, timeout=timeout, client_properties={"connection_name": name}
        )
        try:
            async with asyncio.timeout(timeout):
                publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except BaseException:
            await close_connection(connection, timeout)
            raise
        return cls(connection, publisher)

    def _on_close(self, *_: object) -> None:
        self.lost.set()

    @property
    def alive(self) -> bool:
        return not self.lost.is_set() and not self.connection.is_closed

    async def publishing_channel(self) -> aiormq.abc.AbstractChannel:
        """The publisher channel, opened again if a channel error closed it."""
        if self.publisher.is_closed and self.alive:
            async with self._reopening:
                if self.publisher.is_closed:
                    self.publisher = await self.connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
        return await self.publisher.get_underlay_channel()

    async def close(self, timeout: float) -> None:  # noqa: ASYNC109 - bounded: the peer may be gone
        self.lost.set()
        await close_connection(self.connection, timeout)


async def close_connection(connection: AbstractConnection, timeout: float) -> None:  # noqa: ASYNC109 - see Link.close
    """Close, giving up after `timeout` seconds: a dead peer does not answer `connection.close`."""
    with contextlib.suppress(*amqp.AMQP_ERRORS, TimeoutError):
        async with asyncio.timeout(timeout):
            await connection.close()
