"""Readiness of the worker, its HTTP probes and the watchdog that restarts a worker that stopped consuming.

The worker is ready when its broker connection is open and every subscriber with a handler
has its consumer registered on its own channel. An open connection alone is not enough:
RabbitMQ cancels a consumer when its queue is deleted, and neither aio-pika nor FastStream
consumes again afterwards, so such a worker would stay connected and idle for ever. The
watchdog turns a lasting "not ready" into a non-zero exit, and the supervisor's restart
declares the queue and consumes again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiormq.exceptions import ChannelInvalidStateError
from faststream.rabbit import RabbitBroker
from faststream.rabbit.subscriber import RabbitSubscriber

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 1.0
WATCHDOG_INTERVAL_SECONDS = 2.0


@dataclass(frozen=True)
class Readiness:
    connected: bool
    consumers: dict[str, bool] = field(default_factory=dict)
    """Queue name to whether this worker's consumer of it is registered."""

    @property
    def ready(self) -> bool:
        return self.connected and bool(self.consumers) and all(self.consumers.values())

    @property
    def problems(self) -> list[str]:
        problems = [] if self.connected else ["broker connection is not open"]
        problems += [f"no consumer on queue {queue}" for queue, ok in self.consumers.items() if not ok]
        return problems

    def as_json(self) -> dict[str, object]:
        return {
            "status": "ready" if self.ready else "not ready",
            "broker_connected": self.connected,
            "consumers": self.consumers,
            "problems": self.problems,
        }


async def check_readiness(broker: RabbitBroker, timeout: float = CHECK_TIMEOUT_SECONDS) -> Readiness:
    """Check the broker connection and, for every subscriber with a handler, its consumer on its channel."""
    connected = await broker.ping(timeout)
    consumers = {
        subscriber.queue.name: connected and await _has_consumer(subscriber, timeout)
        for subscriber in broker.subscribers
        if isinstance(subscriber, RabbitSubscriber) and subscriber.calls
    }
    return Readiness(connected, consumers)


async def _has_consumer(subscriber: RabbitSubscriber, timeout: float) -> bool:
    # NOTE: FastStream 0.7 keeps the subscriber's queue object and consumer tag private. They
    # are read here because no public API exposes them, so a FastStream upgrade may rename them.
    queue = getattr(subscriber, "_queue_obj", None)
    consumer_tag = getattr(subscriber, "_consumer_tag", None)
    if not subscriber.running or queue is None or consumer_tag is None or queue.channel.is_closed:
        return False
    try:
        # A robust channel waits here while its connection is being restored.
        async with asyncio.timeout(timeout):
            channel = await queue.channel.get_underlay_channel()
    except (TimeoutError, ChannelInvalidStateError):
        return False
    # aiormq removes a consumer from this mapping when the broker cancels it.
    return consumer_tag in channel.consumers


async def watch_readiness(
    check: Callable[[], Awaitable[Readiness]],
    *,
    unready_exit_seconds: float,
    interval_seconds: float = WATCHDOG_INTERVAL_SECONDS,
) -> Readiness:
    """Check readiness every ``interval_seconds``; return the last result once it was not ready
    for ``unready_exit_seconds`` in a row, after logging it at CRITICAL.

    A change to not ready is logged at WARNING and the way back at INFO.
    """
    unready_since: float | None = None
    while True:
        readiness = await check()
        now = time.monotonic()
        if readiness.ready:
            if unready_since is not None:
                log.info("worker ready again", extra={"unready_seconds": round(now - unready_since, 1)})
            unready_since = None
        elif unready_since is None:
            unready_since = now
            log.warning(
                "worker not ready",
                extra={"problems": readiness.problems, "exit_after_seconds": unready_exit_seconds},
            )
        elif now - unready_since >= unready_exit_seconds:
            log.critical(
                "worker not ready for too long, exiting for the supervisor to restart it",
                extra={"problems": readiness.problems, "unready_seconds": round(now - unready_since, 1)},
            )
            return readiness
        await asyncio.sleep(interval_seconds)
