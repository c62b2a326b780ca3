"""Long-running processes and one-off jobs, started by the CLI."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
import uvicorn
from aiormq.exceptions import AMQPError
from faststream.rabbit.subscriber import RabbitSubscriber
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay, wait_exponential

from dashboard_jobs.consumers.app import Worker, build_worker
from dashboard_jobs.consumers.health import Readiness, check_readiness, watch_readiness
from dashboard_jobs.consumers.topology import SUMMARY_CONSUMER, build_topology
from dashboard_jobs.db import asyncpg_dsn, create_engine, create_session_factory
from dashboard_jobs.domain.summary import rebuild_all_summaries, refresh_summaries
from dashboard_jobs.health_endpoint import HealthServer
from dashboard_jobs.outbox.publisher import ConfirmingPublisher
from dashboard_jobs.outbox.relay import Relay
from dashboard_jobs.runtime import BrokerUnavailableError, broker_unavailable
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)

# At shutdown the worker abandons the summary batch in progress this long (at most a
# quarter of the grace period) before FastStream's deadline closes the channels.
ABANDON_MARGIN_SECONDS = 2.0
# Time left to close the broker connection after the grace period.
BROKER_CLOSE_SECONDS = 5.0


# Errors that a later connection attempt may not meet, because the server is starting,
# restarting or not yet reachable.
STARTUP_RETRY_ERRORS = (OSError, TimeoutError, AMQPError, ConnectionError)


def retry_startup(what: str, window_seconds: float) -> AsyncRetrying:
    """Retry a connection attempt at start-up on network errors for ``window_seconds``, logging each retry."""

    def log_retry(state: RetryCallState) -> None:
        log.warning(
            "%s failed, retrying", what,
            extra={"attempt": state.attempt_number, "error": repr(state.outcome.exception()),
                   "next_try_in_seconds": round(state.next_action.sleep, 1)},
        )

    return AsyncRetrying(
        retry=retry_if_exception_type(STARTUP_RETRY_ERRORS),
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_delay(window_seconds),
        before_sleep=log_retry,
        reraise=True,
    )


async def connect_to_broker(connect: Callable[[], Awaitable[object]], settings: Settings) -> None:
    """Call ``connect`` until it succeeds, for up to ``startup_retry_seconds``.

    A process that starts before the broker (a compose stack, a reboot) waits for it this
    way. Raises runtime.BrokerUnavailableError, which names the broker and how to start one,
    once the time is up, so the process exits non-zero for its supervisor to restart it.
    """
    try:
        async for attempt in retry_startup("connecting to RabbitMQ", settings.startup_retry_seconds):
            with attempt:
                await connect()
    except STARTUP_RETRY_ERRORS as error:
        # The clients wrap the network error in their own, and the innermost one shows what failed.
        root: BaseException = error
        while root.__cause__ is not None:
            root = root.__cause__
        raise broker_unavailable(settings.rabbitmq_url, root, settings.startup_retry_seconds) from error


def stop_on_signals() -> asyncio.Event:
    """Return an event set by the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    return stop


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    if stop.is_set():
        log.info("shutdown already in progress", extra={"signal": signal.Signals(signum).name})
        return
    log.info("shutdown requested", extra={"signal": signal.Signals(signum).name})
    stop.set()


async def wait_for_stop_or_end(stop: asyncio.Event, task: asyncio.Task[object]) -> None:
    """Return when ``stop`` is set or ``task`` ends, whichever comes first."""
    stop_waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stop_waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_waiter.cancel()


def require_database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise SystemExit(
            "DATABASE_URL is not set; set it to the PostgreSQL database, for example "
            "postgresql://postgres@127.0.0.1:5432/dashboard"
        )
    return settings.database_url


async def run_relay(settings: Settings, *, once: bool) -> int:
    """Run the relay until a signal arrives, or drain the backlog once; return the count published.

    On SIGTERM or SIGINT the relay claims no new batch and finishes the batches in
    progress. A batch still running after ``shutdown_grace_seconds`` is cancelled: its
    transaction rolls back, so its rows stay unpublished and the next relay publishes them
    again (the consumers' inbox absorbs any duplicate).
    """
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
        max_attempts=settings.outbox_max_attempts,
    )
    health: HealthServer | None = None
    log.info("relay starting", extra={"once": once, "batch_size": settings.relay_batch_size,
                                      "interval_seconds": settings.relay_interval_seconds})
    try:
        if once:
            await connect_to_broker(publisher.connect, settings)
            return await relay.drain()

        # The run loop connects, and reconnects after an outage, by itself.
        stop = stop_on_signals()
        if settings.relay_health_port:
            health = HealthServer(relay.health, settings.health_host, settings.relay_health_port)
            await health.start()
        task = asyncio.create_task(relay.run(), name="relay")
        await wait_for_stop_or_end(stop, task)
        if task.done():
            await task
            return 0
        await _stop_relay(relay, task, settings.shutdown_grace_seconds)
        return 0
    finally:
        if health is not None:
            await health.close()
        await publisher.close()
        await engine.dispose()
        log.info("relay stopped")


async def _stop_relay(relay: Relay, task: asyncio.Task[None], grace_seconds: float) -> None:
    started = time.monotonic()
    log.info("relay shutdown started",
             extra={"in_flight_rows": relay.in_flight_rows, "grace_seconds": grace_seconds})
    relay.stop()
    done, _ = await asyncio.wait({task}, timeout=grace_seconds)
    if done:
        await task
    else:
        abandoned = relay.in_flight_rows
        task.cancel()
        await asyncio.wait({task})
        log.warning("relay shutdown grace period over, the batches in progress were rolled back",
                    extra={"rolled_back_rows": abandoned, "grace_seconds": grace_seconds})
    log.info("relay shutdown finished", extra={"seconds": round(time.monotonic() - started, 2)})


async def run_worker(settings: Settings, *, once: bool, idle_checks: int = 3) -> int:
    """Consume until a signal arrives or, with ``once``, until the queue is empty and idle.

    Returns the exit code: 0, or 1 when the readiness watchdog gave up on a worker that
    lost its broker connection or a consumer for longer than ``worker_unready_exit_seconds``.
    """
    engine = create_engine(require_database_url(settings), pool_size=settings.database_pool_size)
    worker = build_worker(settings, create_session_factory(engine))
    health: HealthServer | None = None
    consuming = False
    exit_code = 0
    log.info("worker starting", extra={"once": once, "exchange": worker.topology.exchange})
    try:
        try:
            await connect_to_broker(worker.broker.start, settings)
        except BrokerUnavailableError:
            exit_code = 1  # for the "worker stopped" line below
            raise
        consuming = True
        log.info("worker consuming", extra={"queues": [q.name for q in worker.topology.queues]})
        if once:
            await _wait_until_drained(settings, worker, idle_checks)
            return 0

        stop = stop_on_signals()

        async def readiness() -> Readiness:
            return await check_readiness(worker.broker)

        if settings.worker_health_port:
            health = HealthServer(readiness, settings.health_host, settings.worker_health_port)
            await health.start()
        watchdog = asyncio.create_task(
            watch_readiness(readiness, unready_exit_seconds=settings.worker_unready_exit_seconds),
            name="readiness-watchdog",
        )
        await wait_for_stop_or_end(stop, watchdog)
        if watchdog.done():
            exit_code = 1
            if watchdog.exception() is not None:
                log.critical("readiness watchdog failed", exc_info=watchdog.exception())
        else:
            watchdog.cancel()
    finally:
        if consuming:
            await _stop_worker(worker, settings.shutdown_grace_seconds)
        else:
            await worker.broker.stop()
        if health is not None:
            await health.close()
        await engine.dispose()
        log.info("worker stopped", extra={"exit_code": exit_code, "requests": worker.summary.requests,
                                          "recomputations": worker.summary.recomputations})
    return exit_code


def drop_cancelled_handlers(record: logging.LogRecord) -> bool:
    """Logging filter that drops records carrying a CancelledError."""
    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def _in_flight_messages(worker: Worker) -> dict[str, int]:
    # A started FastStream subscriber counts the messages its handlers are processing in
    # its lock. Before start() the lock is a plain context manager without a count.
    return {
        subscriber.queue.name: getattr(subscriber.lock, "qsize", 0)
        for subscriber in worker.broker.subscribers
        if isinstance(subscriber, RabbitSubscriber)
    }


async def _stop_worker(worker: Worker, grace_seconds: float) -> None:
    """Stop consuming, let the handlers in progress finish, abandon what is left at the deadline.

    FastStream's broker.stop() stops handing messages to the handlers, so a message
    delivered after that is never acknowledged and the broker redelivers it. It waits up to
    its graceful_timeout (``grace_seconds``) for the handlers in progress. Then it closes
    the channels, which cancels any handler still running before it can acknowledge.
    Shortly before that deadline the summary batch in progress is cancelled here, so its
    transaction rolls back before the channel closes and cannot commit afterwards.
    """
    broker_logger = logging.getLogger(build_worker.__module__)
    started = time.monotonic()
    log.info("worker shutdown started", extra={"in_flight_messages": _in_flight_messages(worker),
                                               "summary_requests_waiting": worker.summary.waiting,
                                               "grace_seconds": grace_seconds})
    stopping = asyncio.create_task(worker.broker.stop(), name="broker-stop")
    abandon_after = grace_seconds - min(ABANDON_MARGIN_SECONDS, grace_seconds / 4)
    done, _ = await asyncio.wait({stopping}, timeout=abandon_after)
    if not done:
        in_flight = _in_flight_messages(worker)
        await worker.summary.abandon()
        log.warning("worker shutdown grace period over, in-flight messages abandoned for redelivery",
                    extra={"in_flight_messages": in_flight, "grace_seconds": grace_seconds})
        # The warning above stands for the traceback FastStream would log for each cancelled handler.
        broker_logger.addFilter(drop_cancelled_handlers)
    try:
        # broker.stop() waits for the broker when it is unreachable; do not wait for ever.
        done, _ = await asyncio.wait({stopping}, timeout=grace_seconds - abandon_after + BROKER_CLOSE_SECONDS)
    finally:
        broker_logger.removeFilter(drop_cancelled_handlers)
    if not done:
        stopping.cancel()
        log.warning("closing the broker connection timed out")
    elif stopping.exception() is not None:
        log.warning("stopping the broker failed", extra={"error": repr(stopping.exception())})
    log.info("worker shutdown finished", extra={"seconds": round(time.monotonic() - started, 2),
                                                "in_flight_messages": _in_flight_messages(worker)})


class _ApiServer(uvicorn.Server):
    """uvicorn's server, logging the start and end of its graceful shutdown with what was in flight."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        started = time.monotonic()
        log.info("api shutdown started", extra={
            "open_connections": len(self.server_state.connections),
            "requests_in_progress": len(self.server_state.tasks),
            "grace_seconds": self.config.timeout_graceful_shutdown,
        })
        await super().shutdown(sockets)
        log.info("api shutdown finished", extra={"seconds": round(time.monotonic() - started, 2)})


def run_api(settings: Settings, host: str, port: int) -> None:
    """Serve the API until SIGTERM or SIGINT, then give requests in progress the grace period.

    uvicorn stops accepting connections, waits up to ``shutdown_grace_seconds`` for the
    requests in progress and cancels the rest; a cancelled request's transaction rolls back.
    uvicorn then raises the signal again, so the process ends as killed by that signal.
    """
    config = uvicorn.Config(
        "dashboard_jobs.api.app:app_factory",
        factory=True,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    _ApiServer(config).run()


async def _wait_until_drained(settings: Settings, worker: Worker, idle_checks: int) -> None:
    """Return once every consumer queue and its retry queues are empty and the worker is idle.

    A queue's message count excludes unacknowledged deliveries, so the worker also has to
    report idle several times in a row. Handlers still running then finish during the
    broker's graceful stop. Messages waiting in a retry queue come back after their delay,
    so --once waits for them too.
    """
    names = [
        name
        for spec in worker.topology.consumer_queues
        for name in (spec.name, *(retry.name for retry in spec.retry_queues))
    ]
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        quiet = 0
        while quiet < idle_checks:
            await asyncio.sleep(0.2)
            ready = 0
            for name in names:
                declared = await channel.declare_queue(name, passive=True)
                ready += declared.declaration_result.message_count
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
