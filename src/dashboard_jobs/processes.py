"""Long-running processes and one-off jobs, started by the CLI."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import Sequence

import aio_pika
from aiormq.exceptions import AMQPError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay, wait_exponential

from dashboard_jobs.consumers.app import build_worker
from dashboard_jobs.consumers.topology import SUMMARY_CONSUMER, build_topology
from dashboard_jobs.db import asyncpg_dsn, create_engine, create_session_factory
from dashboard_jobs.domain.summary import rebuild_all_summaries, refresh_summaries
from dashboard_jobs.outbox.publisher import ConfirmingPublisher
from dashboard_jobs.outbox.relay import Relay
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)

# A process that starts before the broker (a compose stack, a reboot) waits for it this long,
# retrying with growing pauses, before it exits non-zero for its supervisor to restart it.
STARTUP_RETRY_SECONDS = 60.0


def retry_startup(what: str) -> AsyncRetrying:
    """Retry a connection attempt at start-up on network errors, logging each retry."""

    def log_retry(state: RetryCallState) -> None:
        log.warning(
            "%s failed, retrying", what,
            extra={"attempt": state.attempt_number, "error": repr(state.outcome.exception()),
                   "next_try_in_seconds": round(state.next_action.sleep, 1)},
        )

    return AsyncRetrying(
        retry=retry_if_exception_type((OSError, TimeoutError, AMQPError, ConnectionError)),
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_delay(STARTUP_RETRY_SECONDS),
        before_sleep=log_retry,
        reraise=True,
    )


def stop_on_signals() -> asyncio.Event:
    """Return an event set by the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    return stop


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    log.info("shutdown requested", extra={"signal": signal.Signals(signum).name})
    stop.set()


def require_database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise SystemExit(
            "DATABASE_URL is not set; set it to the PostgreSQL database, for example "
            "postgresql://postgres@127.0.0.1:5432/dashboard"
        )
    return settings.database_url


async def run_relay(settings: Settings, *, once: bool) -> int:
    """Run the relay until a signal arrives, or drain the backlog once; return the count published."""
    database_url = require_database_url(settings)
    engine = create_engine(database_url, pool_size=settings.relay_concurrency + 1)
    publisher = ConfirmingPublisher(
        settings.rabbitmq_url, build_topology(settings), settings.publish_timeout_seconds
    )
    relay = Relay(
        create_session_factory(engine),
        publisher,
        batch_size=settings.relay_batch_size,
        interval_seconds=settings.relay_interval_seconds,
        listen_dsn=asyncpg_dsn(database_url),
        retention=settings.outbox_retention,
        cleanup_batch_size=settings.outbox_cleanup_batch_size,
        concurrency=settings.relay_concurrency,
    )
    log.info("relay starting", extra={"once": once, "batch_size": settings.relay_batch_size,
                                      "interval_seconds": settings.relay_interval_seconds})
    try:
        async for attempt in retry_startup("connecting to RabbitMQ"):
            with attempt:
                await publisher.connect()
        if once:
            return await relay.drain()
        stop = stop_on_signals()
        task = asyncio.create_task(relay.run())
        await stop.wait()
        relay.stop()
        await task
        return 0
    finally:
        await publisher.close()
        await engine.dispose()
        log.info("relay stopped")


async def run_worker(settings: Settings, *, once: bool, idle_checks: int = 3) -> None:
    """Consume until a signal arrives or, with ``once``, until the queue is empty and idle."""
    engine = create_engine(require_database_url(settings), pool_size=settings.database_pool_size)
    worker = build_worker(settings, create_session_factory(engine))
    log.info("worker starting", extra={"once": once, "exchange": worker.topology.exchange})
    try:
        async for attempt in retry_startup("connecting to RabbitMQ"):
            with attempt:
                await worker.broker.start()
        log.info("worker consuming", extra={"queues": [q.name for q in worker.topology.queues]})
        if once:
            await _wait_until_drained(settings, worker, idle_checks)
        else:
            await stop_on_signals().wait()
    finally:
        await worker.broker.stop()
        await engine.dispose()
        log.info("worker stopped", extra={"requests": worker.summary.requests,
                                          "recomputations": worker.summary.recomputations})


async def _wait_until_drained(settings: Settings, worker, idle_checks: int) -> None:
    # The queue's message count excludes unacknowledged deliveries, so the worker also
    # has to report idle several times in a row before the backlog counts as processed.
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(settings.queue_name(SUMMARY_CONSUMER))
        quiet = 0
        while quiet < idle_checks:
            await asyncio.sleep(0.2)
            declared = await channel.declare_queue(queue.name, passive=True)
            ready = declared.declaration_result.message_count
            quiet = quiet + 1 if ready == 0 and worker.summary.idle else 0
    finally:
        await connection.close()


async def refresh_summary_now(settings: Settings, student_ids: Sequence[uuid.UUID]) -> tuple[int, float]:
    """Recompute the given students' summaries, or all of them; return (count, seconds)."""
    engine = create_engine(require_database_url(settings), pool_size=2)
    sessions = create_session_factory(engine)
    started = time.perf_counter()
    try:
        if student_ids:
            count = 0
            ids = list(dict.fromkeys(student_ids))
            for start in range(0, len(ids), settings.summary_rebuild_batch_size):
                async with sessions() as session, session.begin():
                    batch = ids[start : start + settings.summary_rebuild_batch_size]
                    result = await refresh_summaries(session, batch)
                count += len(result.refreshed)
                if result.skipped:
                    log.warning("unknown students skipped", extra={"student_ids": [str(s) for s in result.skipped]})
        else:
            count = await rebuild_all_summaries(sessions, settings.summary_rebuild_batch_size)
    finally:
        await engine.dispose()
    return count, time.perf_counter() - started
