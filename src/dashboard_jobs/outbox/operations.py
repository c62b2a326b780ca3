"""Outbox operations for operators: the status counts, and parked rows sent back to the relay."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard_jobs.outbox.writer import NOTIFY_CHANNEL

COUNTS = text(
    """
    SELECT
        count(*) FILTER (WHERE published_at IS NULL AND failed_at IS NULL) AS pending,
        count(*) FILTER (WHERE published_at IS NULL AND failed_at IS NULL AND available_at <= now()) AS due,
        count(*) FILTER (WHERE published_at IS NULL AND failed_at IS NULL AND available_at > now()) AS delayed,
        count(*) FILTER (WHERE published_at IS NULL AND failed_at IS NOT NULL) AS parked,
        count(*) FILTER (WHERE published_at IS NOT NULL) AS published,
        now() - min(created_at) FILTER (WHERE published_at IS NULL AND failed_at IS NULL) AS oldest_pending_age
    FROM outbox
    """
)
# The error class is the text before the first colon: the relay stores "ClassName: message".
ERRORS = text(
    """
    SELECT type AS event_type,
           split_part(last_error, ':', 1) AS error_class,
           count(*) AS rows,
           count(*) FILTER (WHERE failed_at IS NOT NULL) AS parked,
           (array_agg(last_error ORDER BY seq DESC))[1] AS latest_error
    FROM outbox
    WHERE published_at IS NULL AND last_error IS NOT NULL
    GROUP BY 1, 2
    ORDER BY rows DESC, event_type, error_class
    LIMIT :limit
    """
)
UNPARK = text(
    """
    UPDATE outbox SET failed_at = NULL, available_at = now()
    WHERE failed_at IS NOT NULL AND published_at IS NULL
      AND (CAST(:ids AS uuid[]) IS NULL OR id = ANY(CAST(:ids AS uuid[])))
    RETURNING id
    """
)
STATES = text(
    """
    SELECT id,
           CASE WHEN published_at IS NOT NULL THEN 'published'
                WHEN failed_at IS NOT NULL THEN 'parked'
                ELSE 'pending' END AS state
    FROM outbox WHERE id = ANY(:ids)
    """
)


@dataclass(frozen=True)
class ErrorGroup:
    """Unpublished rows whose last attempt failed, by event type and error class."""

    event_type: str
    error_class: str
    rows: int
    parked: int
    latest_error: str


@dataclass(frozen=True)
class OutboxStatus:
    pending: int
    """Unpublished rows the relay will publish: ``due`` now plus ``delayed`` by a retry backoff."""
    due: int
    delayed: int
    parked: int
    published: int
    """Published rows still kept, until the retention clean-up deletes them."""
    oldest_pending_age: timedelta | None
    errors: list[ErrorGroup]


@dataclass(frozen=True)
class RetryResult:
    retried: list[uuid.UUID]
    not_parked: dict[uuid.UUID, str]
    """Requested rows that were not parked, with their state: "pending" or "published"."""
    not_found: list[uuid.UUID]


async def read_status(session: AsyncSession, error_groups: int = 10) -> OutboxStatus:
    counts = (await session.execute(COUNTS)).mappings().one()
    errors = [ErrorGroup(**row) for row in (await session.execute(ERRORS, {"limit": error_groups})).mappings()]
    return OutboxStatus(**counts, errors=errors)


async def retry_parked(session: AsyncSession, ids: Sequence[uuid.UUID] | None) -> RetryResult:
    """Make parked rows due now, keeping their attempt counts; every parked row when ``ids`` is None.

    A retried row that fails again is parked after that one attempt, because its count is
    already at the maximum. Call inside a transaction: the NOTIFY wakes the relays at commit.
    """
    requested = list(dict.fromkeys(ids)) if ids is not None else None
    retried = list((await session.execute(UNPARK, {"ids": requested})).scalars())
    if retried:
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    if requested is None:
        return RetryResult(retried, {}, [])

    remaining = [row_id for row_id in requested if row_id not in set(retried)]
    states = {row.id: row.state for row in await session.execute(STATES, {"ids": remaining})} if remaining else {}
    return RetryResult(
        retried,
        {row_id: states[row_id] for row_id in remaining if row_id in states},
        [row_id for row_id in remaining if row_id not in states],
    )
