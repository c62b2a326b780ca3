"""A small school for the report tests, with every figure of its January 2025 report computed by hand.

Times are UTC; Paris is UTC+1 in winter, so 2024-12-31T23:30Z is 1 January in Paris
(January) and 2025-01-31T23:30Z is 1 February in Paris (February).

Léa, January 2025:
- evaluations: maths 16/20 and 7/10 (14/20), français 13.5/20 (at 2024-12-31T23:30Z);
  average (16 + 14 + 13.5) / 3 = 14.5. December: maths 12/20, français 8/10 (16/20),
  average 14.0, so change +0.5; maths 15.0 (+3.0), français 13.5 (-2.5). A 0/20 at
  2025-01-31T23:30Z is February's and must not count.
- tasks due in January: one on time, one late, one never done and one done on 3 February.
  That makes 4 assigned, 2 completed, 1 on time (25 %) and 2 overdue. A task due
  2025-01-31T23:30Z is February's.
- sessions in January: done 60, 90 and 45 min (the last at 2024-12-31T23:30Z),
  1 cancelled, 1 no-show; 195 minutes. A planned one on 1 February is February's.
Hugo has no activity at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.domain.models import Evaluation, Task, TutoringSession
from tests.factories import School, build_school

# Malformed periods every entry point must reject with the value in its error.
INVALID_PERIODS = ["2025-1", "2025-13", "2025-00", "25-01", "2025/01", "2025-012", " 2025-01", "2025-01 ", "", "2025-01\n"]


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class ReportSchool:
    school: School
    lea: uuid.UUID
    hugo: uuid.UUID


async def build_report_school(session_factory: async_sessionmaker[AsyncSession]) -> ReportSchool:
    school = await build_school(session_factory)
    lea, coach = school.student_id, school.coach.account_id
    async with session_factory() as session, session.begin():
        session.add_all(_evaluations(lea) + _tasks(lea) + _sessions(lea, coach))
    return ReportSchool(school=school, lea=lea, hugo=school.other_student_id)


async def add_evaluation(session_factory, student_id, subject, score, max_score, at) -> None:
    async with session_factory() as session, session.begin():
        session.add(_evaluation(student_id, subject, score, max_score, at))


def _evaluation(student_id, subject, score, max_score, at) -> Evaluation:
    return Evaluation(
        id=uuid.uuid4(), student_id=student_id, subject=subject,
        score=Decimal(score), max_score=Decimal(max_score), evaluated_at=utc(at),
    )


def _evaluations(student_id: uuid.UUID) -> list[Evaluation]:
    return [
        _evaluation(student_id, "mathematiques", "12", "20", "2024-12-10T10:00Z"),
        _evaluation(student_id, "francais", "8", "10", "2024-12-12T10:00Z"),
        _evaluation(student_id, "mathematiques", "16", "20", "2025-01-10T10:00Z"),
        _evaluation(student_id, "mathematiques", "7", "10", "2025-01-20T10:00Z"),
        _evaluation(student_id, "francais", "13.5", "20", "2024-12-31T23:30Z"),
        _evaluation(student_id, "mathematiques", "0", "20", "2025-01-31T23:30Z"),
    ]


def _task(student_id, title, due, completed=None) -> Task:
    return Task(
        id=uuid.uuid4(), student_id=student_id, title=title, subject="mathematiques", due_at=utc(due),
        status="done" if completed else "todo", completed_at=utc(completed) if completed else None,
    )


def _tasks(student_id: uuid.UUID) -> list[Task]:
    return [
        _task(student_id, "on time", "2025-01-10T17:00Z", "2025-01-09T18:00Z"),
        _task(student_id, "late", "2025-01-15T17:00Z", "2025-01-16T18:00Z"),
        _task(student_id, "never done", "2025-01-25T17:00Z"),
        _task(student_id, "done in February", "2025-01-28T17:00Z", "2025-02-03T18:00Z"),
        _task(student_id, "due in February", "2025-01-31T23:30Z"),
    ]


def _session(student_id, coach_id, starts, minutes, status) -> TutoringSession:
    return TutoringSession(
        id=uuid.uuid4(), student_id=student_id, coach_id=coach_id,
        starts_at=utc(starts), duration_minutes=minutes, status=status,
    )


def _sessions(student_id: uuid.UUID, coach_id: uuid.UUID) -> list[TutoringSession]:
    return [
        _session(student_id, coach_id, "2025-01-08T16:00Z", 60, "done"),
        _session(student_id, coach_id, "2025-01-22T16:00Z", 90, "done"),
        _session(student_id, coach_id, "2024-12-31T23:30Z", 45, "done"),
        _session(student_id, coach_id, "2025-01-15T16:00Z", 60, "cancelled"),
        _session(student_id, coach_id, "2025-01-29T16:00Z", 60, "no_show"),
        _session(student_id, coach_id, "2025-02-01T10:00Z", 60, "planned"),
    ]
