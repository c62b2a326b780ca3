"""Queries behind the demo report: outbox backlog, stale or wrong summaries, refresh latency.

Every function takes an ``AsyncSession`` and only reads, except ``summary_mismatches``,
which writes to a temporary table and rolls the session's transaction back. None of them
takes a row lock, so they can run while the relay and the consumers are busy.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard_jobs.contracts.summary import (
    DashboardSummaryRefreshCompletedV1,
    DashboardSummaryRefreshRequestedV1,
)
from dashboard_jobs.domain.summary import UPSERT_SUMMARIES

SUMMARY_COLUMNS = (
    "open_tasks",
    "overdue_tasks",
    "tasks_completed_7d",
    "completion_rate_30d",
    "average_score_30d",
    "last_evaluation_at",
    "sessions_30d",
    "session_minutes_30d",
    "next_session_at",
)

STALE_SUMMARIES = text(
    """
    WITH target AS (
        SELECT unnest(CAST(:ids AS uuid[])) AS student_id
    ),
    last_write AS (
        SELECT target.student_id,
               greatest(
                   (SELECT max(greatest(t.created_at, t.updated_at)) FROM tasks t
                     WHERE t.student_id = target.student_id),
                   (SELECT max(e.created_at) FROM evaluations e
                     WHERE e.student_id = target.student_id),
                   (SELECT max(greatest(s.created_at, s.updated_at)) FROM tutoring_sessions s
                     WHERE s.student_id = target.student_id)
               ) AS written_at
        FROM target
    )
    SELECT last_write.student_id
    FROM last_write
    LEFT JOIN dashboard_summary d USING (student_id)
    WHERE d.student_id IS NULL OR d.refreshed_at < last_write.written_at
    ORDER BY last_write.student_id
    """
)

# The temporary table has the name of the summary table and pg_temp comes first in the
# search path set below, so UPSERT_SUMMARIES, which names its target without a schema,
# writes the recomputed rows there and leaves public.dashboard_summary untouched.
SHADOW_SUMMARY_TABLE = text(
    "CREATE TEMPORARY TABLE dashboard_summary "
    "(LIKE public.dashboard_summary INCLUDING DEFAULTS INCLUDING INDEXES) ON COMMIT DROP"
)
SHADOW_SEARCH_PATH = text("SET LOCAL search_path = pg_temp, public")

_differs = " OR ".join(f"p.{column} IS DISTINCT FROM r.{column}" for column in SUMMARY_COLUMNS)
MISMATCHED_SUMMARIES = text(
    f"""
    SELECT p.student_id
    FROM public.dashboard_summary p
    JOIN pg_temp.dashboard_summary r USING (student_id)
    WHERE {_differs}
    ORDER BY p.student_id
    """
)

REFRESH_LATENCIES = text(
    """
    WITH requests AS (
        SELECT id, created_at FROM outbox
        WHERE type = :requested AND created_at >= :since
    ),
    completions AS (
        SELECT CAST(c.payload ->> 'refreshed_at' AS timestamptz) AS refreshed_at,
               CAST(request.id AS uuid) AS request_id
        FROM outbox c
        CROSS JOIN LATERAL jsonb_array_elements_text(c.payload -> 'request_message_ids') AS request(id)
        WHERE c.type = :completed AND c.created_at >= :since
    )
    SELECT requests.id,
           extract(epoch FROM min(completions.refreshed_at) - requests.created_at) * 1000 AS latency_ms
    FROM requests
    LEFT JOIN completions ON completions.request_id = requests.id
    GROUP BY requests.id, requests.created_at
    """
)

RECOMPUTATIONS = text(
    """
    SELECT coalesce(sum(jsonb_array_length(payload -> 'student_ids')), 0)
    FROM outbox
    WHERE type = :completed AND created_at >= :since
    """
)


class SummaryCheck(NamedTuple):
    """The students whose summary differs from a recomputation, out of ``checked`` rows."""

    mismatched: list[uuid.UUID]
    checked: int


@dataclass(frozen=True)
class RefreshLatencies:
    """Time from each refresh request to the refresh that covered it, in milliseconds.

    ``pending`` counts the requests that no completed refresh lists yet. The percentiles
    are None when no request completed.
    """

    requests: int
    completed: int
    pending: int
    recomputations: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def recomputations_per_request(self) -> float | None:
        return self.recomputations / self.requests if self.requests else None


async def outbox_backlog(session: AsyncSession) -> int:
    """Return the number of outbox rows the relay has not published yet."""
    query = text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    return (await session.execute(query)).scalar_one()


async def stale_summaries(session: AsyncSession, student_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Return the students among ``student_ids`` whose summary is missing or older than their last write.

    The last write is the latest ``created_at`` or ``updated_at`` of the student's tasks,
    evaluations and tutoring sessions.
    """
    ids = sorted(set(student_ids))
    return list((await session.execute(STALE_SUMMARIES, {"ids": ids})).scalars())


async def summary_mismatches(session: AsyncSession) -> SummaryCheck:
    """Compare every summary row with a recomputation at its own ``refreshed_at``.

    The rolling windows depend on the time of the recomputation, so the rows are grouped
    by ``refreshed_at`` and each group is recomputed with that instant as ``now``, by the
    same UPSERT_SUMMARIES statement the consumer runs, into a temporary table. The
    session's transaction is rolled back at the end, so pass a session without
    uncommitted work. Students without a summary row are not compared (see
    ``stale_summaries``). Raises RuntimeError when the recomputation did not land in the
    temporary table, which would make every row look correct.
    """
    try:
        await session.execute(SHADOW_SUMMARY_TABLE)
        await session.execute(SHADOW_SEARCH_PATH)
        groups = await session.execute(
            text(
                "SELECT refreshed_at, array_agg(student_id ORDER BY student_id) "
                "FROM public.dashboard_summary GROUP BY refreshed_at"
            )
        )
        checked = 0
        for refreshed_at, ids in groups.all():
            await session.execute(UPSERT_SUMMARIES, {"ids": ids, "now": refreshed_at})
            checked += len(ids)
        recomputed = (await session.execute(text("SELECT count(*) FROM pg_temp.dashboard_summary"))).scalar_one()
        if recomputed != checked:
            raise RuntimeError(
                f"the recomputation wrote {recomputed} of {checked} summary rows to the temporary table. "
                "UPSERT_SUMMARIES must name dashboard_summary without a schema for this check to work."
            )
        mismatched = list((await session.execute(MISMATCHED_SUMMARIES)).scalars())
        return SummaryCheck(mismatched, checked)
    finally:
        await session.rollback()


async def events_published(session: AsyncSession, since: datetime) -> int:
    """Return the number of outbox rows created at or after ``since`` that the relay has published."""
    query = text("SELECT count(*) FROM outbox WHERE created_at >= :since AND published_at IS NOT NULL")
    return (await session.execute(query, {"since": since})).scalar_one()


def _percentile(cut_points: list[float], percent: int) -> float:
    return cut_points[percent - 1]


async def refresh_latencies(session: AsyncSession, since: datetime) -> RefreshLatencies:
    """Measure refresh requests written to the outbox at or after ``since``.

    A request starts at its outbox ``created_at``, the start of the API transaction that
    wrote it. It ends at the ``refreshed_at`` of the first DASHBOARD_SUMMARY_REFRESH_COMPLETED
    event whose ``request_message_ids`` lists it: the consumer sets that field after the
    recomputation, just before its transaction commits. The outbox ``created_at`` of the
    completed event would be earlier than the commit by the whole refresh, because
    ``now()`` is the start of the transaction. Both clocks are the same host's in the demo;
    with the worker on another machine, clock skew adds to every figure.

    ``recomputations`` is the number of student summaries recomputed by completed
    refreshes in the same window, so recomputations per request shows how well bursts
    coalesce.
    """
    types = {
        "requested": DashboardSummaryRefreshRequestedV1.TYPE,
        "completed": DashboardSummaryRefreshCompletedV1.TYPE,
    }
    rows = (await session.execute(REFRESH_LATENCIES, {**types, "since": since})).all()
    recomputations = (
        await session.execute(RECOMPUTATIONS, {"completed": types["completed"], "since": since})
    ).scalar_one()

    latencies = sorted(float(latency) for _, latency in rows if latency is not None)
    p50 = p95 = p99 = None
    if len(latencies) == 1:
        p50 = p95 = p99 = latencies[0]
    elif latencies:
        cut_points = statistics.quantiles(latencies, n=100, method="inclusive")
        p50, p95, p99 = (_percentile(cut_points, percent) for percent in (50, 95, 99))

    return RefreshLatencies(
        requests=len(rows),
        completed=len(latencies),
        pending=len(rows) - len(latencies),
        recomputations=int(recomputations),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
    )
