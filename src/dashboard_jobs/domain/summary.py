"""Recompute the dashboard summary read model from the source tables.

KPI formulas, with ``now`` the time of the recomputation:

- ``open_tasks``: tasks whose status is not ``done``.
- ``overdue_tasks``: open tasks with ``due_at < now``.
- ``tasks_completed_7d``: tasks with ``completed_at`` in ``[now - 7 days, now]``.
- ``completion_rate_30d``: among tasks due in ``[now - 30 days, now]``, the share that is
  ``done`` (0 to 1); null when no task was due in that window.
- ``average_score_30d``: mean of ``score / max_score * 20`` over evaluations in
  ``[now - 30 days, now]``, rounded to 2 decimals; null when there is none.
- ``last_evaluation_at``: the latest ``evaluated_at`` not after ``now``.
- ``sessions_30d`` and ``session_minutes_30d``: count and total ``duration_minutes`` of
  sessions with status ``done`` that started in ``[now - 30 days, now]``.
- ``next_session_at``: the earliest ``planned`` session starting after ``now``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

# Row locks on the students serialise concurrent refreshes of the same student. The
# recomputation is a separate statement run after the lock is granted. Under READ
# COMMITTED it reads every write committed before it, so a slower refresh that started
# earlier cannot overwrite a newer summary with older figures. FOR NO KEY UPDATE does
# not conflict with the FOR KEY SHARE locks that inserts into child tables take.
LOCK_STUDENTS = text(
    "SELECT id FROM students WHERE id = ANY(:ids) ORDER BY id FOR NO KEY UPDATE"
)

UPSERT_SUMMARIES = text(
    """
    WITH target AS (
        SELECT unnest(CAST(:ids AS uuid[])) AS student_id
    ),
    task_kpis AS (
        SELECT t.student_id,
               count(*) FILTER (WHERE t.status <> 'done') AS open_tasks,
               count(*) FILTER (WHERE t.status <> 'done' AND t.due_at < CAST(:now AS timestamptz)) AS overdue_tasks,
               count(*) FILTER (
                   WHERE t.completed_at >= CAST(:now AS timestamptz) - interval '7 days' AND t.completed_at <= CAST(:now AS timestamptz)
               ) AS tasks_completed_7d,
               count(*) FILTER (
                   WHERE t.due_at >= CAST(:now AS timestamptz) - interval '30 days' AND t.due_at <= CAST(:now AS timestamptz)
               ) AS due_30d,
               count(*) FILTER (
                   WHERE t.due_at >= CAST(:now AS timestamptz) - interval '30 days' AND t.due_at <= CAST(:now AS timestamptz)
                     AND t.status = 'done'
               ) AS done_due_30d
        FROM tasks t JOIN target USING (student_id)
        GROUP BY t.student_id
    ),
    evaluation_kpis AS (
        SELECT e.student_id,
               round(avg(e.score / e.max_score * 20) FILTER (
                   WHERE e.evaluated_at >= CAST(:now AS timestamptz) - interval '30 days' AND e.evaluated_at <= CAST(:now AS timestamptz)
               ), 2) AS average_score_30d,
               max(e.evaluated_at) FILTER (WHERE e.evaluated_at <= CAST(:now AS timestamptz)) AS last_evaluation_at
        FROM evaluations e JOIN target USING (student_id)
        GROUP BY e.student_id
    ),
    session_kpis AS (
        SELECT s.student_id,
               count(*) FILTER (
                   WHERE s.status = 'done'
                     AND s.starts_at >= CAST(:now AS timestamptz) - interval '30 days' AND s.starts_at <= CAST(:now AS timestamptz)
               ) AS sessions_30d,
               coalesce(sum(s.duration_minutes) FILTER (
                   WHERE s.status = 'done'
                     AND s.starts_at >= CAST(:now AS timestamptz) - interval '30 days' AND s.starts_at <= CAST(:now AS timestamptz)
               ), 0) AS session_minutes_30d,
               min(s.starts_at) FILTER (
                   WHERE s.status = 'planned' AND s.starts_at > CAST(:now AS timestamptz)
               ) AS next_session_at
        FROM tutoring_sessions s JOIN target USING (student_id)
        GROUP BY s.student_id
    )
    INSERT INTO dashboard_summary AS d (
        student_id, open_tasks, overdue_tasks, tasks_completed_7d, completion_rate_30d,
        average_score_30d, last_evaluation_at, sessions_30d, session_minutes_30d,
        next_session_at, refreshed_at
    )
    SELECT st.id,
           coalesce(tk.open_tasks, 0),
           coalesce(tk.overdue_tasks, 0),
           coalesce(tk.tasks_completed_7d, 0),
           CASE WHEN coalesce(tk.due_30d, 0) = 0 THEN NULL
                ELSE round(tk.done_due_30d::numeric / tk.due_30d, 4) END,
           ek.average_score_30d,
           ek.last_evaluation_at,
           coalesce(sk.sessions_30d, 0),
           coalesce(sk.session_minutes_30d, 0),
           sk.next_session_at,
           CAST(:now AS timestamptz)
    FROM students st
    JOIN target ON target.student_id = st.id
    LEFT JOIN task_kpis tk ON tk.student_id = st.id
    LEFT JOIN evaluation_kpis ek ON ek.student_id = st.id
    LEFT JOIN session_kpis sk ON sk.student_id = st.id
    ON CONFLICT (student_id) DO UPDATE SET
        open_tasks = EXCLUDED.open_tasks,
        overdue_tasks = EXCLUDED.overdue_tasks,
        tasks_completed_7d = EXCLUDED.tasks_completed_7d,
        completion_rate_30d = EXCLUDED.completion_rate_30d,
        average_score_30d = EXCLUDED.average_score_30d,
        last_evaluation_at = EXCLUDED.last_evaluation_at,
        sessions_30d = EXCLUDED.sessions_30d,
        session_minutes_30d = EXCLUDED.session_minutes_30d,
        next_session_at = EXCLUDED.next_session_at,
        refreshed_at = EXCLUDED.refreshed_at
    """
)


@dataclass(frozen=True)
class RefreshResult:
    refreshed: list[uuid.UUID]
    skipped: list[uuid.UUID]


async def refresh_summaries(
    session: AsyncSession, student_ids: Sequence[uuid.UUID], now: datetime | None = None
) -> RefreshResult:
    """Upsert the summary rows of ``student_ids`` in the session's transaction.

    Ids of students that do not exist are returned as skipped. ``now`` defaults to the
    database clock at the time the locks are granted.
    """
    unique_ids = sorted(set(student_ids))
    locked = (await session.execute(LOCK_STUDENTS, {"ids": unique_ids})).scalars().all()
    existing = set(locked)
    skipped = [student_id for student_id in unique_ids if student_id not in existing]
    if not locked:
        return RefreshResult(refreshed=[], skipped=skipped)

    if now is None:
        now = (await session.execute(text("SELECT clock_timestamp()"))).scalar_one()
    await session.execute(UPSERT_SUMMARIES, {"ids": list(locked), "now": now})
    return RefreshResult(refreshed=list(locked), skipped=skipped)


NEXT_STUDENT_IDS = text(
    "SELECT id FROM students WHERE id > :after ORDER BY id LIMIT :limit"
)


async def rebuild_all_summaries(
    session_factory: async_sessionmaker[AsyncSession], batch_size: int = 500
) -> int:
    """Recompute every student's summary, one short transaction per batch; return the count.

    Readers are never blocked: each batch upserts rows under MVCC, and the row locks taken
    by refresh_summaries only make a concurrent refresh of the same students wait.
    """
    after = uuid.UUID(int=0)
    total = 0
    while True:
        async with session_factory() as session, session.begin():
            ids = (await session.execute(NEXT_STUDENT_IDS, {"after": after, "limit": batch_size})).scalars().all()
            if not ids:
                return total
            result = await refresh_summaries(session, ids)
        total += len(result.refreshed)
        after = ids[-1]
        log.debug("summary rebuild batch committed", extra={"students": len(ids), "total": total})


WRITE_AFTER = text(
    """
    SELECT EXISTS (SELECT 1 FROM tasks WHERE student_id = :id AND updated_at > :at)
        OR EXISTS (SELECT 1 FROM evaluations WHERE student_id = :id AND created_at > :at)
        OR EXISTS (SELECT 1 FROM tutoring_sessions WHERE student_id = :id AND updated_at > :at)
    """
)


async def has_write_after(session: AsyncSession, student_id: uuid.UUID, at: datetime) -> bool:
    """Return True when a task, evaluation or session of the student was written after ``at``.

    created_at and updated_at are set before the write commits, so a write that committed
    just before a refresh may still read as newer than it. The result then errs towards
    "refreshing" for a moment, never towards "fresh".
    """
    return bool((await session.execute(WRITE_AFTER, {"id": student_id, "at": at})).scalar_one())
