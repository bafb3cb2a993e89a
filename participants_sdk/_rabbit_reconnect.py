"""Trying again after a lost connection or consumer channel, until the broker answers.

Each attempt is bounded by the connect timeout; a failed one is logged (URL redacted) and tried
again after the reconnect interval. See `_rabbit_link` for why not aio-pika's robust connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

import structlog

from participants_sdk._rabbit_link import Link
from participants_sdk.redaction import redact

if TYPE_CHECKING:
    from collections.abc import Callable

    from participants_sdk._rabbit_consumers import RabbitSubscription

_log = structlog.get_logger("participants_sdk.rabbitmq")


@dataclasses.dataclass(frozen=True, slots=True)
class Reconnector:
    redacted_url: str
    name: str
    connect_timeout: float
    close_timeout: float
    interval: float
    url: str = dataclasses.field(repr=False)
    """Holds the password: never logged."""

    async def new_link(
        self,
        subscriptions: Callable[[], list[RabbitSubscription]],
        closing: Callable[[], bool],
    ) -> Link | None:
        """A new link with every consumer attached, or None once the broker is closing."""
        attempt = 0
        while not closing():
            attempt += 1
            link: Link | None = None
            try:
                link = await Link.open(self.url, name=self.name, timeout=self.connect_timeout)
                for subscription in subscriptions():
                    async with asyncio.timeout(self.connect_timeout):
                        await subscription.attach(link.connection)
            except (Exception, asyncio.CancelledError) as exc:  # any failure: try again
                if cancelled_from_outside():
                    raise
                if link is not None:
                    await link.close(self.close_timeout)
                _log.warning(
                    "reconnect to RabbitMQ failed; trying again",
                    url=self.redacted_url,
                    attempt=attempt,
                    retry_in_s=self.interval,
                    error=redact(str(exc)) or type(exc).__name__,
                )
                await asyncio.sleep(self.interval)
            else:
                return link
        return None

    async def reattach(
        self,
        subscription: RabbitSubscription,
        current: Callable[[], Link],
        closing: Callable[[], bool],
    ) -> None:
        """Attach a consumer whose channel alone closed to the current connection again."""
        delay = min(1.0, self.interval)
        first = True
        while not closing() and not subscription.cancelled:
            if not first:
                delay = min(delay * 2, max(self.interval, 30.0))
            first = False
            await asyncio.sleep(delay)  # the channel error may be a lost connection, told later
            link = current()
            if not link.alive or subscription.attached_to(link.connection):
                return  # a new link attaches every consumer
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await subscription.attach(link.connection)
            except (Exception, asyncio.CancelledError) as exc:  # any failure: try again
                if cancelled_from_outside():
                    raise
                _log.warning(
                    "cannot consume again; trying again",
                    queue=subscription.queue,
                    retry_in_s=delay,
                    error=str(exc) or type(exc).__name__,
                )
            else:
                _log.info("consuming again", queue=subscription.queue)
                return


def cancelled_from_outside() -> bool:
    """Whether the running task is being cancelled, rather than a library raising
    `CancelledError` by itself: aiormq does when the broker drops a connection mid-handshake,
    which must count as one failed attempt, not end the task that reconnects."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
