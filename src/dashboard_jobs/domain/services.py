"""Write use cases on a student's tasks, evaluations and tutoring sessions.

Each use case checks its input and the caller's access, writes the domain row and records a
DASHBOARD_SUMMARY_REFRESH_REQUESTED event in the outbox. None of them commits, because the
caller owns the unit of work, so the domain row and the outbox row commit or roll back together::

    async with session_factory() as session, session.begin():
        written = await create_task(session, principal, student_id, title=..., ...)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.domain.access import (
    Principal,
    ensure_can_access,
    ensure_can_write,
    ensure_can_write_student,
)
from dashboard_jobs.domain.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from dashboard_jobs.domain.models import (
    Account,
    Evaluation,
    Role,
    SessionStatus,
    Task,
    TaskStatus,
    TutoringSession,
)
from dashboard_jobs.domain.subjects import SUBJECTS, is_known_subject
from dashboard_jobs.outbox.writer import add_event

# Limits of the columns and check constraints in the initial migration.
MAX_TITLE_LENGTH = 200
MIN_SESSION_MINUTES = 1
MAX_SESSION_MINUTES = 600
SCORE_DECIMAL_PLACES = 2
MAX_SCORE_LIMIT = Decimal("9999.99")

DEFAULT_MAX_SCORE = Decimal(20)

RowT = TypeVar("RowT")


@dataclass(frozen=True)
class Written(Generic[RowT]):
    """A row a use case wrote, with the id of the outbox event recorded in the same transaction."""

    row: RowT
    outbox_id: uuid.UUID


def _now() -> datetime:
    return datetime.now(UTC)


# Tasks


async def create_task(
    session: AsyncSession,
    actor: Principal,
    student_id: uuid.UUID,
    *,
    title: str,
    subject: str,
    due_at: datetime,
    correlation_id: uuid.UUID | None = None,
) -> Written[Task]:
    _raise_if_invalid(_check_title(title), _check_subject(subject), _check_aware("due_at", due_at))
    await ensure_can_write_student(session, actor, student_id)

    task = Task(
        student_id=student_id,
        title=title.strip(),
        subject=subject,
        due_at=due_at.astimezone(UTC),
        status=TaskStatus.TODO,
        completed_at=None,
        created_by=actor.account_id,
    )
    session.add(task)
    await session.flush()

    outbox_id = await _request_summary_refresh(session, student_id, "task.created", correlation_id)
    return Written(task, outbox_id)


async def update_task(
    session: AsyncSession,
    actor: Principal,
    task_id: uuid.UUID,
    *,
    title: str | None = None,
    subject: str | None = None,
    due_at: datetime | None = None,
    status: str | None = None,
    correlation_id: uuid.UUID | None = None,
) -> Written[Task]:
    """Change the given fields of a task. A None argument leaves that field unchanged."""
    _raise_if_invalid(
        _check_title(title),
        _check_subject(subject),
        _check_aware("due_at", due_at),
        _check_choice("status", status, TaskStatus),
    )
    task = await _load_for_write(session, actor, Task, task_id, "task")

    now = _now()
    if title is not None:
        task.title = title.strip()
    if subject is not None:
        task.subject = subject
    if due_at is not None:
        task.due_at = due_at.astimezone(UTC)
    if status is not None:
        _set_task_status(task, TaskStatus(status), now)
    task.updated_at = now
    await session.flush()

    outbox_id = await _request_summary_refresh(session, task.student_id, "task.updated", correlation_id)
    return Written(task, outbox_id)


async def complete_task(
    session: AsyncSession,
    actor: Principal,
    task_id: uuid.UUID,
    *,
    correlation_id: uuid.UUID | None = None,
) -> Written[Task]:
    """Mark a task done now. Raise Conflict when it is already done, which keeps its completion time."""
    task = await _load_for_write(session, actor, Task, task_id, "task")
    if task.status == TaskStatus.DONE:
        raise Conflict("task.already_completed", task_id=task.id)

    now = _now()
    _set_task_status(task, TaskStatus.DONE, now)
    task.updated_at = now
    await session.flush()

    outbox_id = await _request_summary_refresh(session, task.student_id, "task.completed", correlation_id)
    return Written(task, outbox_id)


def _set_task_status(task: Task, status: TaskStatus, now: datetime) -> None:
    # The ck_tasks_completed_at constraint requires completed_at to be set exactly while the
    # status is done. Setting done again keeps the first completion time.
    if status is TaskStatus.DONE:
        if task.status != TaskStatus.DONE:
            task.completed_at = now
    else:
        task.completed_at = None
    task.status = status


# Evaluations


async def record_evaluation(
    session: AsyncSession,
    actor: Principal,
    student_id: uuid.UUID,
    *,
    subject: str,
    score: Decimal,
    max_score: Decimal = DEFAULT_MAX_SCORE,
    evaluated_at: datetime | None = None,
    correlation_id: uuid.UUID | None = None,
) -> Written[Evaluation]:
    """Record a graded evaluation. ``evaluated_at`` defaults to now."""
    _raise_if_invalid(
        _check_subject(subject),
        *_check_scores(score, max_score),
        _check_aware("evaluated_at", evaluated_at),
    )
    await ensure_can_write_student(session, actor, student_id)

    evaluation = Evaluation(
        student_id=student_id,
        subject=subject,
        score=score,
        max_score=max_score,
        evaluated_at=(evaluated_at or _now()).astimezone(UTC),
        created_by=actor.account_id,
    )
    session.add(evaluation)
    await session.flush()

    outbox_id = await _request_summary_refresh(session, student_id, "evaluation.recorded", correlation_id)
    return Written(evaluation, outbox_id)


def _check_scores(score: Decimal, max_score: Decimal) -> list[FieldError]:
    errors = [
        error
        for error in (_check_decimal("score", score), _check_decimal("max_score", max_score))
        if error is not None
    ]
    if errors:
        return errors
    if not Decimal(0) < max_score <= MAX_SCORE_LIMIT:
        return [FieldError("max_score", max_score, "max_score.out_of_range", {"max": MAX_SCORE_LIMIT})]
    if not Decimal(0) <= score <= max_score:
        return [FieldError("score", score, "score.out_of_range", {"min": 0, "max": max_score})]
    return []


def _check_decimal(field: str, value: Decimal) -> FieldError | None:
    if not value.is_finite():
        return FieldError(field, str(value), "number.not_finite")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > SCORE_DECIMAL_PLACES:
        return FieldError(field, value, "number.too_many_decimals", {"places": SCORE_DECIMAL_PLACES})
    return None


# Tutoring sessions


async def log_tutoring_session(
    session: AsyncSession,
    actor: Principal,
    student_id: uuid.UUID,
    *,
    starts_at: datetime,
    duration_minutes: int,
    status: str = SessionStatus.PLANNED,
    coach_id: uuid.UUID | None = None,
    correlation_id: uuid.UUID | None = None,
) -> Written[TutoringSession]:
    """Log a tutoring session of ``student_id``.

    A coach logs their own sessions, so ``coach_id`` is the caller or omitted. An admin must
    name the coach.
    """
    _raise_if_invalid(
        _check_aware("starts_at", starts_at),
        _check_duration(duration_minutes),
        _check_choice("status", status, SessionStatus),
    )
    await ensure_can_write_student(session, actor, student_id)
    coach_id = await _resolve_coach(session, actor, coach_id)

    tutoring_session = TutoringSession(
        student_id=student_id,
        coach_id=coach_id,
        starts_at=starts_at.astimezone(UTC),
        duration_minutes=duration_minutes,
        status=SessionStatus(status),
    )
    session.add(tutoring_session)
    await session.flush()

    outbox_id = await _request_summary_refresh(session, student_id, "session.logged", correlation_id)
    return Written(tutoring_session, outbox_id)


async def update_tutoring_session(
    session: AsyncSession,
    actor: Principal,
    session_id: uuid.UUID,
    *,
    starts_at: datetime | None = None,
    duration_minutes: int | None = None,
    status: str | None = None,
    correlation_id: uuid.UUID | None = None,
) -> Written[TutoringSession]:
    """Change the given fields of a tutoring session. A None argument leaves that field unchanged."""
    _raise_if_invalid(
        _check_aware("starts_at", starts_at),
        _check_duration(duration_minutes),
        _check_choice("status", status, SessionStatus),
    )
    tutoring_session = await _load_for_write(session, actor, TutoringSession, session_id, "session")

    if starts_at is not None:
        tutoring_session.starts_at = starts_at.astimezone(UTC)
    if duration_minutes is not None:
        tutoring_session.duration_minutes = duration_minutes
    if status is not None:
        tutoring_session.status = SessionStatus(status)
    tutoring_session.updated_at = _now()
    await session.flush()

    outbox_id = await _request_summary_refresh(
        session, tutoring_session.student_id, "session.updated", correlation_id
    )
    return Written(tutoring_session, outbox_id)


async def _resolve_coach(session: AsyncSession, actor: Principal, coach_id: uuid.UUID | None) -> uuid.UUID:
    if actor.role is Role.COACH:
        if coach_id is not None and coach_id != actor.account_id:
            raise InvalidInput("coach_id", coach_id, "coach_id.not_self")
        return actor.account_id

    if coach_id is None:
        raise InvalidInput("coach_id", None, "coach_id.required")
    is_coach = exists().where(Account.id == coach_id, Account.role == Role.COACH)
    if not await session.scalar(select(is_coach)):
        raise InvalidInput("coach_id", coach_id, "coach_id.not_a_coach")
    return coach_id


def _check_duration(minutes: int | None) -> FieldError | None:
    if minutes is None or MIN_SESSION_MINUTES <= minutes <= MAX_SESSION_MINUTES:
        return None
    return FieldError(
        "duration_minutes",
        minutes,
        "duration.out_of_range",
        {"min": MIN_SESSION_MINUTES, "max": MAX_SESSION_MINUTES},
    )


# Shared steps


async def _load_for_write(
    session: AsyncSession, actor: Principal, model: type[RowT], row_id: uuid.UUID, resource: str
) -> RowT:
    """Load and lock a row for a change, checking access through the row's student.

    A coach gets the same Forbidden for a row that does not exist as for a row of another
    coach's student. Only an admin learns that the row does not exist.
    """
    ensure_can_write(actor)
    # FOR UPDATE serialises concurrent changes of one row, so two completions of the same
    # task cannot both pass the "not done yet" check.
    row = await session.get(model, row_id, with_for_update=True)
    if row is None:
        if actor.role is Role.ADMIN:
            raise NotFound(resource, row_id)
        raise Forbidden()

    await ensure_can_access(session, actor, row.student_id)  # type: ignore[attr-defined]
    return row


async def _request_summary_refresh(
    session: AsyncSession, student_id: uuid.UUID, reason: str, correlation_id: uuid.UUID | None
) -> uuid.UUID:
    event = DashboardSummaryRefreshRequestedV1(student_ids=[student_id], reason=reason, requested_at=_now())
    return await add_event(
        session,
        event,
        aggregate_type="student",
        aggregate_id=str(student_id),
        correlation_id=correlation_id,
    )


def _raise_if_invalid(*errors: FieldError | None) -> None:
    found = [error for error in errors if error is not None]
    if found:
        raise InvalidInput.from_errors(found)


def _check_title(title: str | None) -> FieldError | None:
    if title is None:
        return None
    stripped = title.strip()
    if not stripped:
        return FieldError("title", title, "title.blank")
    if len(stripped) > MAX_TITLE_LENGTH:
        return FieldError("title", title, "title.too_long", {"max": MAX_TITLE_LENGTH})
    return None


def _check_subject(subject: str | None) -> FieldError | None:
    if subject is None or is_known_subject(subject):
        return None
    return FieldError("subject", subject, "subject.unknown", {"allowed": SUBJECTS})


def _check_aware(field: str, value: datetime | None) -> FieldError | None:
    if value is None or value.utcoffset() is not None:
        return None
    return FieldError(field, value, "datetime.naive")


def _check_choice(field: str, value: Any, choices: type[StrEnum]) -> FieldError | None:
    if value is None or value in {choice.value for choice in choices}:
        return None
    return FieldError(field, value, "choice.unknown", {"allowed": tuple(choice.value for choice in choices)})
