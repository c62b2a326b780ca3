"""The summary KPIs against hand-computed expectations on a small fixture."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from dashboard_jobs.domain.summary import refresh_summaries
from tests.helpers import insert_students

NOW = datetime.fromisoformat("2025-11-20T12:00:00+00:00")


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


async def test_summary_matches_hand_computation(session_factory, clean_db):
    student, other = await insert_students(session_factory, 2)
    coach = uuid.uuid4()
    async with session_factory() as session, session.begin():
        await session.execute(text(
            "INSERT INTO accounts (id, email, display_name, role) VALUES (:id, 'c@example.org', 'Coach', 'coach')"
        ), {"id": coach})
        tasks = [
            # (due_at, status, completed_at)
            (ago(40), "done", ago(41)),      # due outside the 30-day window
            (ago(20), "done", ago(21)),      # due in window, done
            (ago(10), "todo", None),         # due in window, open, overdue
            (ago(5), "done", ago(3)),        # due in window, done late, completed within 7 days
            (ago(1), "in_progress", None),   # due in window, open, overdue
            (ago(-3), "todo", None),         # due in the future: open, not overdue, not in window
        ]
        for due_at, status, completed_at in tasks:
            await session.execute(text(
                "INSERT INTO tasks (id, student_id, title, subject, due_at, status, completed_at) "
                "VALUES (:id, :student, 'Exercice', 'mathematiques', :due, :status, :completed)"
            ), {"id": uuid.uuid4(), "student": student, "due": due_at, "status": status, "completed": completed_at})
        evaluations = [(ago(45), 5, 20), (ago(25), 15, 20), (ago(2), 8, 10), (ago(-1), 20, 20)]
        for at, score, max_score in evaluations:
            await session.execute(text(
                "INSERT INTO evaluations (id, student_id, subject, score, max_score, evaluated_at) "
                "VALUES (:id, :student, 'francais', :score, :max, :at)"
            ), {"id": uuid.uuid4(), "student": student, "score": score, "max": max_score, "at": at})
        sessions = [
            (ago(35), 60, "done"), (ago(14), 60, "done"), (ago(7), 90, "done"),
            (ago(6), 60, "cancelled"), (ago(3), 45, "no_show"),
            (ago(-2), 60, "planned"), (ago(-9), 60, "planned"),
        ]
        for starts_at, minutes, status in sessions:
            await session.execute(text(
                "INSERT INTO tutoring_sessions (id, student_id, coach_id, starts_at, duration_minutes, status) "
                "VALUES (:id, :student, :coach, :starts, :minutes, :status)"
            ), {"id": uuid.uuid4(), "student": student, "coach": coach, "starts": starts_at,
                "minutes": minutes, "status": status})

        result = await refresh_summaries(session, [student, other, uuid.uuid4()], now=NOW)

    assert sorted(result.refreshed) == sorted([student, other])
    assert len(result.skipped) == 1

    async with session_factory() as session:
        row = (await session.execute(text(
            "SELECT * FROM mv_dashboard_summary WHERE student_id = :id"), {"id": student})).mappings().one()
        empty = (await session.execute(text(
            "SELECT * FROM dashboard_summary WHERE student_id = :id"), {"id": other})).mappings().one()

    assert row["open_tasks"] == 3
    assert row["overdue_tasks"] == 2
    assert row["tasks_completed_7d"] == 1
    # Due in the window: 20, 10, 5 and 1 days ago; done: 20 and 5 days ago.
    assert row["completion_rate_30d"] == Decimal("0.5000")
    # 15/20 -> 15 and 8/10 -> 16 on the /20 scale; the future one is ignored.
    assert row["average_score_30d"] == Decimal("15.50")
    assert row["last_evaluation_at"] == ago(2)
    assert row["sessions_30d"] == 2
    assert row["session_minutes_30d"] == 150
    assert row["next_session_at"] == ago(-2)
    assert row["refreshed_at"] == NOW

    assert empty["open_tasks"] == 0
    assert empty["completion_rate_30d"] is None
    assert empty["average_score_30d"] is None
    assert empty["next_session_at"] is None
