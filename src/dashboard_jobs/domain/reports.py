"""Compute and store parent reports for a list of students and one period.

The figures of every student come from three grouped statements (evaluations, tasks,
sessions), whatever the number of students. ``as_of`` is the end of the calendar month,
or the generation time while the month is still running (a month-to-date report).

- progress: the mean of ``score / max_score * 20`` over evaluations in
  ``[start, as_of)``, overall and per subject, rounded to 2 decimals. ``previous_average``
  is the same mean over the whole previous month, and ``change`` is their difference
  (null when either is missing).
- tasks: ``assigned`` counts the tasks due in the calendar month, and ``completed`` those
  with ``completed_at < as_of``. ``overdue`` counts those due before ``as_of`` and not
  completed by then. ``on_time_rate`` is the share of tasks due before ``as_of`` that
  were completed no later than their due date (null when none was due).
- sessions: tutoring sessions starting in the calendar month, counted by current status
  (``planned``, ``done``, ``cancelled``, ``no_show``), and ``minutes`` sums the done ones.
  A month-to-date report therefore also counts the sessions planned later in the month.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard_jobs.contracts.reports import ParentReportCompletedV1
from dashboard_jobs.domain.periods import Period, ReportWindow, current_period, report_window
from dashboard_jobs.domain.report_models import Report
from dashboard_jobs.domain.report_render import TEMPLATE_VERSION, render_summary_md

STUDENT_NOT_FOUND = "student_not_found"
PERIOD_IN_FUTURE = "period_in_future"

ReportStatus = Literal["generated", "cached", "failed"]

STUDENTS = text("SELECT id, first_name FROM students WHERE id = ANY(:ids)")

# GROUPING SETS returns one row per (student, subject) and one overall row per student,
# whose subject is null and whose is_overall flag is 1.
EVALUATION_KPIS = text(
    """
    SELECT e.student_id,
           e.subject,
           grouping(e.subject) AS is_overall,
           count(*) FILTER (WHERE e.evaluated_at >= :start) AS evaluations,
           round(avg(e.score / e.max_score * 20) FILTER (WHERE e.evaluated_at >= :start), 2) AS average,
           round(avg(e.score / e.max_score * 20) FILTER (WHERE e.evaluated_at < :start), 2) AS previous_average,
           round(
               avg(e.score / e.max_score * 20) FILTER (WHERE e.evaluated_at >= :start)
               - avg(e.score / e.max_score * 20) FILTER (WHERE e.evaluated_at < :start),
               2
           ) AS change
    FROM evaluations e
    WHERE e.student_id = ANY(:ids) AND e.evaluated_at >= :previous_start AND e.evaluated_at < :as_of
    GROUP BY GROUPING SETS ((e.student_id, e.subject), (e.student_id))
    ORDER BY e.student_id, e.subject
    """
)

TASK_KPIS = text(
    """
    SELECT t.student_id,
           count(*) AS assigned,
           count(*) FILTER (WHERE t.completed_at < :as_of) AS completed,
           count(*) FILTER (WHERE t.due_at < :as_of) AS due,
           count(*) FILTER (
               WHERE t.due_at < :as_of AND t.completed_at < :as_of AND t.completed_at <= t.due_at
           ) AS completed_on_time,
           count(*) FILTER (
               WHERE t.due_at < :as_of AND (t.completed_at IS NULL OR t.completed_at >= :as_of)
           ) AS overdue
    FROM tasks t
    WHERE t.student_id = ANY(:ids) AND t.due_at >= :start AND t.due_at < :end
    GROUP BY t.student_id
    """
)

SESSION_KPIS = text(
    """
    SELECT s.student_id,
           count(*) FILTER (WHERE s.status = 'planned') AS planned,
           count(*) FILTER (WHERE s.status = 'done') AS done,
           count(*) FILTER (WHERE s.status = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE s.status = 'no_show') AS no_show,
           coalesce(sum(s.duration_minutes) FILTER (WHERE s.status = 'done'), 0) AS minutes
    FROM tutoring_sessions s
    WHERE s.student_id = ANY(:ids) AND s.starts_at >= :start AND s.starts_at < :end
    GROUP BY s.student_id
    """
)


@dataclass(frozen=True)
class ReportOutcome:
    """The outcome of one student's report request."""

    student_id: uuid.UUID
    period: str
    status: ReportStatus
    report_id: uuid.UUID | None
    generated_at: datetime
    reason: str | None = None

    def completed_event(self, batch_id: uuid.UUID) -> ParentReportCompletedV1:
        return ParentReportCompletedV1(
            student_id=self.student_id,
            period=self.period,
            report_id=self.report_id,
            status=self.status,
            reason=self.reason,
            generated_at=self.generated_at,
            batch_id=batch_id,
        )


async def produce_reports(
    session: AsyncSession,
    student_ids: Sequence[uuid.UUID],
    period: Period,
    *,
    regenerate: bool,
    now: datetime,
    timezone: str,
    locale: str,
) -> list[ReportOutcome]:
    """Reuse or generate the reports of ``student_ids`` for ``period``, in the session's transaction.

    Without ``regenerate`` an existing report is returned as cached. Unknown students and
    a period after the month of ``now`` give failed outcomes and raise nothing, because
    retrying cannot change the outcome.
    """
    ids = list(dict.fromkeys(student_ids))
    if period > current_period(now, timezone):
        return [_failed(student_id, period, now, PERIOD_IN_FUTURE) for student_id in ids]

    names = {row.id: row.first_name for row in await session.execute(STUDENTS, {"ids": ids})}
    outcomes = {s: _failed(s, period, now, STUDENT_NOT_FOUND) for s in ids if s not in names}

    if not regenerate:
        outcomes.update(await _cached_reports(session, list(names), period))
    to_generate = [student_id for student_id in names if student_id not in outcomes]
    if to_generate:
        window = report_window(period, now, timezone)
        kpis = await compute_kpis(session, to_generate, window)
        rows = [_report_row(s, names[s], window, kpis[s], now, locale) for s in to_generate]
        outcomes.update(await _upsert_reports(session, rows))

    return [outcomes[student_id] for student_id in ids]


async def compute_kpis(
    session: AsyncSession, student_ids: Sequence[uuid.UUID], window: ReportWindow
) -> dict[uuid.UUID, dict[str, Any]]:
    """Return the KPIs of every student of ``student_ids`` over ``window``, in three statements."""
    params = {
        "ids": list(student_ids),
        "start": window.start,
        "end": window.end,
        "as_of": window.as_of,
        "previous_start": window.previous_start,
    }
    kpis = {student_id: _empty_kpis() for student_id in student_ids}

    for row in await session.execute(EVALUATION_KPIS, params):
        _add_evaluation_row(kpis[row.student_id]["progress"], row)
    for row in await session.execute(TASK_KPIS, params):
        kpis[row.student_id]["tasks"] = _task_kpis(row)
    for row in await session.execute(SESSION_KPIS, params):
        kpis[row.student_id]["sessions"] = _session_kpis(row)

    for student_kpis in kpis.values():
        student_kpis["has_activity"] = _has_activity(student_kpis)
    return kpis


async def load_reports(
    session: AsyncSession, student_ids: Sequence[uuid.UUID], period: str
) -> list[Report]:
    """Return the stored reports of ``student_ids`` for ``period``, in no particular order."""
    statement = select(Report).where(Report.student_id.in_(list(student_ids)), Report.period == period)
    return list((await session.scalars(statement)).all())


async def _cached_reports(
    session: AsyncSession, student_ids: list[uuid.UUID], period: Period
) -> dict[uuid.UUID, ReportOutcome]:
    statement = select(Report.id, Report.student_id, Report.generated_at).where(
        Report.student_id.in_(student_ids), Report.period == str(period)
    )
    return {
        row.student_id: ReportOutcome(row.student_id, str(period), "cached", row.id, row.generated_at)
        for row in await session.execute(statement)
    }


async def _upsert_reports(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[uuid.UUID, ReportOutcome]:
    # A regenerated report keeps its id, so a report id names one (student, period) for good.
    statement = insert(Report).values(rows)
    statement = statement.on_conflict_do_update(
        constraint="uq_reports_student_period",
        set_={
            column: statement.excluded[column]
            for column in ("summary_md", "kpis_json", "payload", "locale", "template_version", "generated_at")
        },
    ).returning(Report.id, Report.student_id, Report.period, Report.generated_at)
    return {
        row.student_id: ReportOutcome(row.student_id, row.period, "generated", row.id, row.generated_at)
        for row in await session.execute(statement)
    }


def _report_row(
    student_id: uuid.UUID,
    first_name: str,
    window: ReportWindow,
    kpis: dict[str, Any],
    now: datetime,
    locale: str,
) -> dict[str, Any]:
    payload = {
        "student": {"id": str(student_id), "first_name": first_name},
        "period": str(window.period),
        "timezone": window.timezone,
        "window": {
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
            "as_of": window.as_of.isoformat(),
            "month_to_date": window.month_to_date,
            "stop_date": window.stop_date().isoformat(),
        },
        "kpis": kpis,
        "template_version": TEMPLATE_VERSION,
    }
    return {
        "id": uuid.uuid4(),
        "student_id": student_id,
        "period": str(window.period),
        "summary_md": render_summary_md(payload, locale),
        "kpis_json": kpis,
        "payload": payload,
        "locale": locale,
        "template_version": TEMPLATE_VERSION,
        "generated_at": now,
    }


def _failed(student_id: uuid.UUID, period: Period, now: datetime, reason: str) -> ReportOutcome:
    return ReportOutcome(student_id, str(period), "failed", None, now, reason)


def _empty_kpis() -> dict[str, Any]:
    return {
        "has_activity": False,
        "progress": {"evaluations": 0, "average": None, "previous_average": None, "change": None, "subjects": []},
        "tasks": {"assigned": 0, "completed": 0, "completed_on_time": 0, "overdue": 0, "on_time_rate": None},
        "sessions": {"planned": 0, "done": 0, "cancelled": 0, "no_show": 0, "minutes": 0},
    }


def _add_evaluation_row(progress: dict[str, Any], row: Any) -> None:
    figures = {
        "evaluations": row.evaluations,
        "average": _number(row.average),
        "previous_average": _number(row.previous_average),
        "change": _number(row.change),
    }
    if row.is_overall:
        progress.update(figures)
    else:
        progress["subjects"].append({"subject": row.subject, **figures})


def _task_kpis(row: Any) -> dict[str, Any]:
    on_time_rate = round(row.completed_on_time / row.due, 4) if row.due else None
    return {
        "assigned": row.assigned,
        "completed": row.completed,
        "completed_on_time": row.completed_on_time,
        "overdue": row.overdue,
        "on_time_rate": on_time_rate,
    }


def _session_kpis(row: Any) -> dict[str, Any]:
    return {
        "planned": row.planned,
        "done": row.done,
        "cancelled": row.cancelled,
        "no_show": row.no_show,
        "minutes": int(row.minutes),
    }


def _has_activity(kpis: dict[str, Any]) -> bool:
    sessions = kpis["sessions"]
    return bool(
        kpis["progress"]["evaluations"]
        or kpis["tasks"]["assigned"]
        or sessions["planned"] + sessions["done"] + sessions["cancelled"] + sessions["no_show"]
    )


def _number(value: Decimal | None) -> float | None:
    # JSONB stores numbers; the averages have 2 decimals, which a float keeps exactly enough.
    return None if value is None else float(value)
