"""The relay: the only process that publishes to RabbitMQ.

It claims unpublished outbox rows in ``seq`` order with ``FOR UPDATE SKIP LOCKED``, publishes
them with publisher confirms and marks them published in the same transaction, after the
confirms. The row locks are held while publishing, so two relays never publish the same row.
A relay that dies after a publish but before its commit leaves the rows unpublished. The
next claim publishes them again, and the consumers' inbox absorbs the duplicate.

Two kinds of failure are handled apart:

- A failure of one message (nack, return, oversized body, confirm timeout while the broker
  responds) counts an attempt against its row, stores the error and delays the row with an
  exponential backoff. After ``max_attempts`` the row is parked (``failed_at``): it is kept,
  skipped by every claim, and logged at ERROR until `dashboard-jobs outbox retry` clears it.
  The other rows of the batch are published as usual.
- An outage (broker connection or channel closed, connection refused, database
  unreachable) is not a fault of the rows. The batch's unconfirmed rows are released
  without an attempt counted, and the run loop waits with a growing pause, logging each
  retry at WARNING, until the broker and the database respond again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from dashboard_jobs.outbox.publisher import BrokerUnavailableError, ConfirmingPublisher, OutboxRow
from dashboard_jobs.outbox.writer import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

CLAIM = text(
    """
    SELECT id, seq, type, version, payload, headers, created_at, attempts
    FROM outbox
    WHERE published_at IS NULL AND failed_at IS NULL AND available_at <= now()
    ORDER BY seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
MARK_PUBLISHED = text(
    "UPDATE outbox SET published_at = now(), attempts = attempts + 1, last_error = NULL "
    "WHERE id = ANY(:ids)"
)
# clock_timestamp(), not now(): now() is when the transaction began, and a batch that waited
# for confirm timeouts may have begun longer ago than the delay.
MARK_FAILED = text(
    """
    UPDATE outbox
    SET attempts = attempts + 1,
        last_error = :error,
        available_at = clock_timestamp() + make_interval(secs => :delay)
    WHERE id = :id
    """
)
PARK = text(
    "UPDATE outbox SET attempts = attempts + 1, last_error = :error, failed_at = now() WHERE id = :id"
)
DELETE_PUBLISHED = text(
    """
    DELETE FROM outbox WHERE id IN (
        SELECT id FROM outbox
        WHERE published_at < now() - CAST(:retention AS interval)
        LIMIT :limit
    )
    """
)
DELETE_INBOX = text(
    """
    DELETE FROM inbox WHERE (consumer, message_id) IN (
        SELECT consumer, message_id FROM inbox
        WHERE processed_at < now() - CAST(:retention AS interval)
        LIMIT :limit
    )
    """
)

CLEANUP_INTERVAL_SECONDS = 3600.0
ERROR_TEXT_LIMIT = 2000

# Pause before a failed row's next attempt: 2 s, 4 s, 8 s ... capped at 5 minutes, plus up
# to a second of jitter so rows that failed together do not come back together.
MESSAGE_RETRY_WAIT = wait_exponential_jitter(multiplier=2, max=300, jitter=1)
# Pause between two tries to get past an outage: 0.5 s, 1 s, 2 s ... capped at 30 s.
OUTAGE_RETRY_WAIT = wait_exponential_jitter(multiplier=0.5, max=30, jitter=0.5)

# asyncpg errors meaning the server went away or is not accepting connections (shutdown,
# restart, recovery), as opposed to an error in a statement.
_ASYNCPG_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)


def is_database_outage(error: BaseException) -> bool:
    """Return True when ``error`` means the database is unreachable, not that a statement is wrong."""
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        # The driver's exception is the cause of SQLAlchemy's adapted one.
        error = error.orig if error.orig is not None else error
    if isinstance(error, sa_exc.TimeoutError):
        return True  # no pooled connection became free in time
    connection_errors = (OSError, TimeoutError, *_ASYNCPG_CONNECTION_ERRORS)
    return isinstance(error, connection_errors) or isinstance(error.__cause__, connection_errors)


def is_outage(error: BaseException) -> bool:
    return isinstance(error, BrokerUnavailableError) or is_database_outage(error)


def message_retry_delay(attempts: int) -> float:
    """Return the pause in seconds before the next attempt of a row that failed ``attempts`` times."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempts
    return MESSAGE_RETRY_WAIT(state)


@dataclass(frozen=True)
class RelayHealth:
    """Readiness of a running relay: its broker connection is open and its last pass succeeded."""

    broker_connected: bool
    outage: str | None

    @property
    def ready(self) -> bool:
        return self.broker_connected and self.outage is None

    def as_json(self) -> dict[str, object]:
        return {"status": "ready" if self.ready else "not ready",
                "broker_connected": self.broker_connected, "outage": self.outage}


@dataclass
class BatchResult:
    claimed: int
    published: int
    failed: int
    parked: int = 0


class Relay:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        publisher: ConfirmingPublisher,
        *,
        batch_size: int,
        interval_seconds: float,
        listen_dsn: str | None = None,
        retention: timedelta = timedelta(days=7),
        cleanup_batch_size: int = 1_000,
        concurrency: int = 1,
        max_attempts: int = 10,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._sessions = session_factory
        self._publisher = publisher
        self._batch_size = batch_size
        self._interval = interval_seconds
        self._listen_dsn = listen_dsn
        self._retention = retention
        self._cleanup_batch_size = cleanup_batch_size
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._listen_failing = False
        self._last_cleanup: float | None = None
        self.in_flight_rows = 0
        """Rows claimed by batches that have not committed or rolled back yet."""
        self.outage: str | None = None
        """The error of the last failed pass while an outage lasts, else None."""

    async def publish_batch(self) -> BatchResult:
        """Claim, publish and mark one batch in one transaction.

        Raises BrokerUnavailableError after committing the rows that were confirmed, leaving
        the others as they were, when the broker became unavailable during the batch.
        """
        outage: BrokerUnavailableError | None = None
        async with self._sessions() as session, session.begin():
            rows = [OutboxRow(**row._mapping) for row in await session.execute(CLAIM, {"limit": self._batch_size})]
            if not rows:
                return BatchResult(0, 0, 0)

            self.in_flight_rows += len(rows)
            try:
                outcomes = await asyncio.gather(
                    *(self._publisher.publish(row) for row in rows), return_exceptions=True
                )
            finally:
                self.in_flight_rows -= len(rows)

            published = [row.id for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
            if published:
                await session.execute(MARK_PUBLISHED, {"ids": published})

            outage = next((o for o in outcomes if isinstance(o, BrokerUnavailableError)), None)
            failed = parked = 0
            if outage is None:
                failed, parked = await self._record_failures(session, rows, outcomes)

        if outage is not None:
            log.warning(
                "broker unavailable during a batch, unconfirmed rows released without counting an attempt",
                extra={"claimed": len(rows), "published": len(published),
                       "released": len(rows) - len(published), "error": str(outage)},
            )
            raise outage

        log.info(
            "outbox batch published",
            extra={"claimed": len(rows), "published": len(published), "failed": failed, "parked": parked,
                   "first_seq": rows[0].seq, "last_seq": rows[-1].seq},
        )
        return BatchResult(len(rows), len(published), failed, parked)

    async def _record_failures(
        self, session: AsyncSession, rows: list[OutboxRow], outcomes: list[BaseException | None]
    ) -> tuple[int, int]:
        failed = parked = 0
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome is None:
                continue
            failed += 1
            attempts = row.attempts + 1
            error = f"{type(outcome).__name__}: {outcome}"[:ERROR_TEXT_LIMIT]
            extra = {"outbox_id": str(row.id), "event_type": row.type, "attempts": attempts, "error": error}
            if attempts >= self._max_attempts:
                parked += 1
                await session.execute(PARK, {"id": row.id, "error": error})
                log.error(
                    "publish failed too often, outbox row parked until `dashboard-jobs outbox retry`",
                    extra=extra,
                )
            else:
                delay = message_retry_delay(attempts)
                await session.execute(MARK_FAILED, {"id": row.id, "error": error, "delay": delay})
                log.warning(
                    "publish failed, the row stays unpublished and is retried later",
                    extra={**extra, "retry_in_seconds": round(delay, 1)},
                )
        return failed, parked

    async def drain(self) -> int:
        """Publish batches until no row is available; return the number published.

        ``concurrency`` lanes claim disjoint batches (SKIP LOCKED), so one lane's database
        round trips overlap another's wait for confirms. Every lane finishes its own batch
        before the first error of any lane is raised.
        """
        results = await asyncio.gather(
            *(self._drain_lane() for _ in range(self._concurrency)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(results)  # type: ignore[arg-type]

    async def _drain_lane(self) -> int:
        # A failed row is delayed or parked, so the next claim never returns it at once:
        # a full batch of failures moves on to the next rows instead of spinning.
        total = 0
        while not self._stopping.is_set():
            result = await self.publish_batch()
            total += result.published
            if result.claimed < self._batch_size:
                return total
        return total

    async def delete_expired(self) -> int:
        """Delete published outbox rows and inbox rows older than the retention, in small batches.

        Parked rows are never published, so they are kept until an operator retries them.
        """
        deleted = 0
        params = {"retention": self._retention, "limit": self._cleanup_batch_size}
        for statement in (DELETE_PUBLISHED, DELETE_INBOX):
            while True:
                async with self._sessions() as session, session.begin():
                    count = (await session.execute(statement, params)).rowcount
                deleted += count
                if count < self._cleanup_batch_size:
                    break
        if deleted:
            log.info("expired outbox and inbox rows deleted", extra={"deleted": deleted})
        return deleted

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def health(self) -> RelayHealth:
        return RelayHealth(self._publisher.is_connected, self.outage)

    def stop(self) -> None:
        """Ask run() to return after the batches in progress commit; it claims no new batch."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Drain on every NOTIFY, and at least every ``interval_seconds``, until stop() is called.

        Broker and database outages never end the loop: each pass is retried with a growing
        pause until it succeeds or stop() is called. Other errors propagate.
        """
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    await self._run_pass_until_it_succeeds()
                except Exception as error:
                    if self._stopping.is_set() and is_outage(error):
                        break
                    raise
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
        finally:
            await self._close_listener()

    async def _run_pass_until_it_succeeds(self) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_outage),
            wait=OUTAGE_RETRY_WAIT,
            stop=lambda _state: self._stopping.is_set(),
            sleep=self._sleep_unless_stopping,
            before_sleep=self._log_outage,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._run_pass()
        self.outage = None
        if attempt.retry_state.attempt_number > 1:
            log.info(
                "relay resumed after an outage",
                extra={"attempts": attempt.retry_state.attempt_number,
                       "outage_seconds": round(attempt.retry_state.seconds_since_start, 1)},
            )

    async def _run_pass(self) -> None:
        await self._ensure_listener()
        await self._publisher.ready()
        await self.drain()

        now = asyncio.get_running_loop().time()
        if self._last_cleanup is None or now - self._last_cleanup >= CLEANUP_INTERVAL_SECONDS:
            await self.delete_expired()
            self._last_cleanup = now

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _log_outage(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        source = "broker" if isinstance(error, BrokerUnavailableError) else "database"
        self.outage = f"{source} unavailable: {type(error).__name__}: {error}"
        log.warning(
            "relay pass failed, %s unavailable, retrying", source,
            extra={"attempt": state.attempt_number, "error": f"{type(error).__name__}: {error}",
                   "next_try_in_seconds": round(state.upcoming_sleep, 1)},
        )

    async def _ensure_listener(self) -> None:
        if self._listen_dsn is None or (self._listener is not None and not self._listener.is_closed()):
            return
        self._listener = None
        try:
            connection = await asyncpg.connect(self._listen_dsn, timeout=10)
            await connection.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            # Polling every interval still publishes everything, only later; the next pass
            # tries to listen again. Only the first failure of a series is logged.
            if not self._listen_failing:
                log.warning(
                    "LISTEN failed, falling back to polling until it succeeds",
                    extra={"error": f"{type(error).__name__}: {error}", "interval_seconds": self._interval},
                )
            self._listen_failing = True
            return
        # A lost LISTEN connection wakes the loop, which connects again on its next pass.
        connection.add_termination_listener(self._on_listener_lost)
        self._listener = connection
        self._listen_failing = False
        log.info("listening for outbox notifications", extra={"channel": NOTIFY_CHANNEL})

    def _on_listener_lost(self, _connection: asyncpg.Connection) -> None:
        if not self._stopping.is_set():
            log.warning("LISTEN connection lost, reconnecting", extra={"channel": NOTIFY_CHANNEL})
        self._wake.set()

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            try:
                await asyncio.wait_for(listener.close(), timeout=5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                listener.terminate()
