"""Write services and access rules, called directly inside a unit of work."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dashboard_jobs.domain import services
from dashboard_jobs.domain.access import Principal, ensure_can_access, ensure_can_write_student
from dashboard_jobs.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from dashboard_jobs.domain.models import Evaluation, OutboxMessage, Role, Task, TutoringSession
from tests.factories import count_rows, refresh_requests, school  # noqa: F401

DUE = datetime(2031, 1, 15, 17, 0, tzinfo=UTC)


async def new_task(session_factory, actor, student_id) -> Task:
    async with session_factory() as session, session.begin():
        written = await services.create_task(
            session, actor, student_id, title="Fiche de lecture", subject="francais", due_at=DUE
        )
    return written.row


# Unit of work


async def test_services_never_commit(session_factory, school):
    async with session_factory() as session:
        async with session.begin():
            written = await services.create_task(
                session, school.coach, school.student_id, title="t", subject="svt", due_at=DUE
            )
            await session.rollback()

    assert written.outbox_id is not None
    assert await count_rows(session_factory, Task) == 0
    assert await count_rows(session_factory, OutboxMessage) == 0


async def test_error_between_inserts_leaves_nothing(session_factory, school, monkeypatch):
    async def fail_before_outbox_insert(*args, **kwargs):
        raise ConnectionResetError("connection lost")

    monkeypatch.setattr(services, "add_event", fail_before_outbox_insert)

    with pytest.raises(ConnectionResetError):
        async with session_factory() as session, session.begin():
            await services.record_evaluation(
                session, school.coach, school.student_id, subject="svt", score=Decimal(12)
            )

    assert await count_rows(session_factory, Evaluation) == 0
    assert await count_rows(session_factory, OutboxMessage) == 0


async def test_write_commits_with_refresh_request(session_factory, school):
    correlation_id = uuid.uuid4()

    async with session_factory() as session, session.begin():
        written = await services.log_tutoring_session(
            session,
            school.admin,
            school.student_id,
            starts_at=DUE,
            duration_minutes=600,
            status="done",
            coach_id=school.coach.account_id,
            correlation_id=correlation_id,
        )

    [row] = await refresh_requests(session_factory)
    assert row.id == written.outbox_id
    assert row.payload["reason"] == "session.logged"
    assert row.payload["student_ids"] == [str(school.student_id)]
    assert row.headers["correlation_id"] == str(correlation_id)
    assert await count_rows(session_factory, TutoringSession) == 1


# Input rules


async def test_invalid_input_lists_every_field(session_factory, school):
    with pytest.raises(InvalidInput) as failure:
        async with session_factory() as session, session.begin():
            await services.create_task(
                session,
                school.coach,
                school.student_id,
                title="x" * 201,
                subject="Mathématiques",
                due_at=datetime(2031, 1, 15, 17, 0),
            )

    errors = {error.field: error for error in failure.value.errors}
    assert set(errors) == {"title", "subject", "due_at"}
    assert errors["title"].code == "title.too_long"
    assert errors["subject"].value == "Mathématiques"
    assert errors["due_at"].code == "datetime.naive"
    assert await count_rows(session_factory, Task) == 0


@pytest.mark.parametrize(
    ("score", "max_score", "field", "code"),
    [
        (Decimal("20.01"), Decimal(20), "score", "score.out_of_range"),
        (Decimal("-0.5"), Decimal(20), "score", "score.out_of_range"),
        (Decimal("12.125"), Decimal(20), "score", "number.too_many_decimals"),
        (Decimal(5), Decimal(0), "max_score", "max_score.out_of_range"),
        (Decimal(5), Decimal(10_000), "max_score", "max_score.out_of_range"),
        (Decimal("Infinity"), Decimal(20), "score", "number.not_finite"),
    ],
)
async def test_evaluation_score_rules(session_factory, school, score, max_score, field, code):
    with pytest.raises(InvalidInput) as failure:
        async with session_factory() as session, session.begin():
            await services.record_evaluation(
                session, school.coach, school.student_id, subject="svt", score=score, max_score=max_score
            )

    assert (failure.value.field, failure.value.errors[0].code) == (field, code)


@pytest.mark.parametrize(("score", "max_score"), [(Decimal(0), Decimal(20)), (Decimal("7.50"), Decimal(10)), (Decimal(40), Decimal(40))])
async def test_evaluation_score_bounds_are_accepted(session_factory, school, score, max_score):
    async with session_factory() as session, session.begin():
        written = await services.record_evaluation(
            session, school.coach, school.student_id, subject="svt", score=score, max_score=max_score
        )

    assert written.row.score == score


@pytest.mark.parametrize(("minutes", "valid"), [(0, False), (1, True), (600, True), (601, False)])
async def test_session_duration_bounds(session_factory, school, minutes, valid):
    async def log() -> None:
        async with session_factory() as session, session.begin():
            await services.log_tutoring_session(
                session, school.coach, school.student_id, starts_at=DUE, duration_minutes=minutes
            )

    if valid:
        await log()
        assert await count_rows(session_factory, TutoringSession) == 1
    else:
        with pytest.raises(InvalidInput) as failure:
            await log()
        assert failure.value.field == "duration_minutes"


# Task status


async def test_complete_task_rejects_second_completion(session_factory, school):
    task = await new_task(session_factory, school.coach, school.student_id)

    async with session_factory() as session, session.begin():
        completed = (await services.complete_task(session, school.coach, task.id)).row
    with pytest.raises(Conflict):
        async with session_factory() as session, session.begin():
            await services.complete_task(session, school.coach, task.id)

    assert completed.status == "done"
    assert completed.completed_at is not None
    assert len(await refresh_requests(session_factory)) == 2


async def test_update_task_normalises_due_date_to_utc(session_factory, school):
    task = await new_task(session_factory, school.coach, school.student_id)
    paris_evening = datetime(2031, 2, 1, 18, 30, tzinfo=timezone(timedelta(hours=1)))

    async with session_factory() as session, session.begin():
        written = await services.update_task(session, school.coach, task.id, due_at=paris_evening)

    assert written.row.due_at == paris_evening
    assert written.row.due_at.utcoffset() == timedelta(0)


# Access rules


async def test_access_rules_by_role(session_factory, school):
    unknown_id = uuid.uuid4()
    cases = [
        (school.admin, school.student_id, None),
        (school.admin, school.other_student_id, None),
        (school.admin, unknown_id, NotFound),
        (school.coach, school.student_id, None),
        (school.coach, school.other_student_id, Forbidden),
        (school.coach, unknown_id, Forbidden),
        (school.parent, school.student_id, None),
        (school.parent, school.other_student_id, Forbidden),
        (school.parent, unknown_id, Forbidden),
    ]

    outcomes = []
    async with session_factory() as session:
        for principal, student_id, _ in cases:
            try:
                await ensure_can_access(session, principal, student_id)
                outcomes.append(None)
            except (Forbidden, NotFound) as error:
                outcomes.append(type(error))

    assert outcomes == [expected for _, _, expected in cases]


async def test_coach_forbidden_hides_existence(session_factory, school):
    reasons = []
    async with session_factory() as session:
        for student_id in (school.other_student_id, uuid.uuid4()):
            with pytest.raises(Forbidden) as failure:
                await ensure_can_access(session, school.coach, student_id)
            reasons.append(failure.value.reason)

    assert reasons == ["student_access", "student_access"]


async def test_parent_cannot_write_own_child(session_factory, school):
    async with session_factory() as session:
        with pytest.raises(Forbidden) as failure:
            await ensure_can_write_student(session, school.parent, school.student_id)

    assert failure.value.reason == "read_only_role"


async def test_unlinked_coach_reaches_nobody(session_factory, school):
    stranger = Principal(uuid.uuid4(), Role.COACH)

    async with session_factory() as session:
        with pytest.raises(Forbidden):
            await ensure_can_access(session, stranger, school.student_id)
