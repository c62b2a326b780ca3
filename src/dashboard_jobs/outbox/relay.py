"""The relay: the only process that publishes to RabbitMQ.

It claims unpublished outbox rows in ``seq`` order with ``FOR UPDATE SKIP LOCKED``, publishes
them with publisher confirms and marks them published in the same transaction, after the
confirms. The row locks are held while publishing, so two relays never publish the same row.
A relay that dies after a publish but before its commit leaves the rows unpublished. The
next claim publishes them again, and the consumers' inbox absorbs the duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.outbox.publisher import ConfirmingPublisher, OutboxRow
from dashboard_jobs.outbox.writer import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

CLAIM = text(
    """
    SELECT id, seq, type, version, payload, headers, created_at
    FROM outbox
    WHERE published_at IS NULL AND available_at <= now()
    ORDER BY seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
MARK_PUBLISHED = text(
    "UPDATE outbox SET published_at = now(), attempts = attempts + 1, last_error = NULL "
    "WHERE id = ANY(:ids)"
)
# A failed row waits 2^attempts seconds, capped at 5 minutes, before the next claim.
MARK_FAILED = text(
    """
    UPDATE outbox
    SET attempts = attempts + 1,
        last_error = :error,
        available_at = now() + least(power(2, attempts + 1), 300) * interval '1 second'
    WHERE id = :id
    """
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


@dataclass
class BatchResult:
    claimed: int
    published: int
    failed: int


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
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._sessions = session_factory
        self._publisher = publisher
        self._batch_size = batch_size
        self._interval = interval_seconds
        self._listen_dsn = listen_dsn
        self._retention = retention
        self._cleanup_batch_size = cleanup_batch_size
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    async def publish_batch(self) -> BatchResult:
        """Claim, publish and mark one batch in one transaction."""
        async with self._sessions() as session, session.begin():
            rows = [OutboxRow(**row._mapping) for row in await session.execute(CLAIM, {"limit": self._batch_size})]
            if not rows:
                return BatchResult(0, 0, 0)

            outcomes = await asyncio.gather(
                *(self._publisher.publish(row) for row in rows), return_exceptions=True
            )

            published: list[uuid.UUID] = []
            failed = 0
            for row, outcome in zip(rows, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    failed += 1
                    error = f"{type(outcome).__name__}: {outcome}"[:2000]
                    log.error(
                        "publish failed, the row stays unpublished",
                        extra={"outbox_id": str(row.id), "event_type": row.type, "error": error},
                    )
                    await session.execute(MARK_FAILED, {"id": row.id, "error": error})
                else:
                    published.append(row.id)
            if published:
                await session.execute(MARK_PUBLISHED, {"ids": published})

        log.info(
            "outbox batch published",
            extra={"claimed": len(rows), "published": len(published), "failed": failed,
                   "first_seq": rows[0].seq, "last_seq": rows[-1].seq},
        )
        return BatchResult(len(rows), len(published), failed)

    async def drain(self) -> int:
        """Publish batches until no row is available; return the number published.

        ``concurrency`` lanes claim disjoint batches (SKIP LOCKED), so one lane's database
        round trips overlap another's wait for confirms.
        """
        counts = await asyncio.gather(*(self._drain_lane() for _ in range(self._concurrency)))
        return sum(counts)

    async def _drain_lane(self) -> int:
        total = 0
        while not self._stopping.is_set():
            result = await self.publish_batch()
            total += result.published
            if result.claimed < self._batch_size or result.published == 0:
                return total
        return total

    async def delete_expired(self) -> int:
        """Delete published outbox rows and inbox rows older than the retention, in small batches."""
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

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Drain on every NOTIFY, and at least every ``interval_seconds``, until stop() is called."""
        listener = await self._listen()
        last_cleanup = asyncio.get_running_loop().time() - 3600
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                await self.drain()

                now = asyncio.get_running_loop().time()
                if now - last_cleanup >= 3600:
                    await self.delete_expired()
                    last_cleanup = now

                if listener is None or listener.is_closed():
                    listener = await self._listen()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
                except TimeoutError:
                    pass
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        if self._listen_dsn is None:
            return None
        try:
            connection = await asyncpg.connect(self._listen_dsn, timeout=10)
            await connection.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as error:
            # Polling every interval still publishes everything, only later.
            log.warning(
                "LISTEN failed, falling back to polling",
                extra={"error": str(error), "interval_seconds": self._interval},
            )
            return None
        log.info("listening for outbox notifications", extra={"channel": NOTIFY_CHANNEL})
        return connection
