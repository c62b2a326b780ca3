"""The demo school loader, the report queries and the workload driver."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from dashboard_jobs.api.app import create_app
from dashboard_jobs.api.auth import mint_token
from dashboard_jobs.contracts.summary import (
    DashboardSummaryRefreshCompletedV1,
    DashboardSummaryRefreshRequestedV1,
)
from dashboard_jobs.demo import audit
from dashboard_jobs.demo.school import PARIS, School, load_school
from dashboard_jobs.demo.workload import (
    COMPLETE_TASK,
    CREATE_TASK,
    RECORD_EVALUATION,
    drive_workload,
)
from dashboard_jobs.domain.models import Role
from dashboard_jobs.domain.subjects import SUBJECTS
from dashboard_jobs.domain.summary import refresh_summaries
from tests.helpers import scalar, wait_for

TODAY = date(2025, 11, 14)
CUTOFF = datetime(2025, 11, 14, tzinfo=PARIS)
YEAR_START = date(2025, 9, 1)
STUDENTS = 60
SEED = 7

FINGERPRINTED_TABLES = (
    "students", "accounts", "coach_students", "parent_students", "tasks", "evaluations", "tutoring_sessions",
)


@pytest.fixture
async def school(settings, clean_db) -> School:
    return await load_school(settings.database_url, students=STUDENTS, seed=SEED, today=TODAY)


async def fingerprints(session_factory) -> dict[str, str]:
    return {
        table: await scalar(session_factory, f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t")
        for table in FINGERPRINTED_TABLES
    }


async def rows(session_factory, sql: str, **params) -> list:
    async with session_factory() as session:
        return list((await session.execute(text(sql), params)).all())


async def test_load_is_deterministic(settings, session_factory, school):
    first = await fingerprints(session_factory)

    again = await load_school(settings.database_url, students=STUDENTS, seed=SEED, today=TODAY)

    assert again == school
    assert await fingerprints(session_factory) == first


async def test_other_seed_gives_other_school(settings, session_factory, school):
    first = await fingerprints(session_factory)

    other = await load_school(settings.database_url, students=STUDENTS, seed=SEED + 1, today=TODAY)

    assert other.admin_id != school.admin_id
    assert (await fingerprints(session_factory))["tasks"] != first["tasks"]


async def test_counts_match_tables(session_factory, school):
    for table, count in school.counts.items():
        assert await scalar(session_factory, f"SELECT count(*) FROM {table}") == count, table
    assert school.counts["students"] == STUDENTS


async def test_coaches_have_about_25_students(session_factory, school):
    assert all(20 <= len(students) <= 30 for _, students in school.coaches)
    assert sorted(school.student_ids) == sorted(set(school.student_ids))
    assert len(school.student_ids) == STUDENTS

    links = await rows(session_factory, "SELECT coach_id, student_id FROM coach_students")
    assert sorted(links) == sorted((coach, student) for coach, students in school.coaches for student in students)
    roles = await rows(session_factory, "SELECT role FROM accounts WHERE id = ANY(:ids)", ids=[c for c, _ in school.coaches])
    assert {role for (role,) in roles} == {"coach"}


async def test_students_have_one_or_two_parents(session_factory, school):
    per_student = await rows(
        session_factory,
        "SELECT s.id, count(p.parent_id) FROM students s "
        "LEFT JOIN parent_students p ON p.student_id = s.id GROUP BY s.id",
    )
    assert len(per_student) == STUDENTS
    assert all(1 <= parents <= 2 for _, parents in per_student)

    parent_roles = await rows(
        session_factory, "SELECT DISTINCT a.role FROM parent_students p JOIN accounts a ON a.id = p.parent_id"
    )
    assert parent_roles == [("parent",)]


async def test_one_admin_account(session_factory, school):
    admins = await rows(session_factory, "SELECT id FROM accounts WHERE role = 'admin'")
    assert admins == [(school.admin_id,)]


async def test_students_are_in_college_grades(session_factory, school):
    grades = await rows(session_factory, "SELECT DISTINCT grade FROM students ORDER BY grade")
    assert {grade for (grade,) in grades} <= {"6e", "5e", "4e", "3e"}


async def test_evaluations_are_marks_out_of_20(session_factory, school):
    low, high, max_scores, off_grid = (
        await rows(
            session_factory,
            "SELECT min(score), max(score), array_agg(DISTINCT max_score), "
            "count(*) FILTER (WHERE score * 2 <> trunc(score * 2)) FROM evaluations",
        )
    )[0]
    assert low >= 0
    assert high <= 20
    assert max_scores == [Decimal(20)]
    assert off_grid == 0


async def test_about_three_tasks_per_week(session_factory, school):
    weeks = (TODAY - YEAR_START).days / 7
    tasks = await scalar(session_factory, "SELECT count(*) FROM tasks")

    per_week = tasks / STUDENTS / weeks

    assert 2.4 <= per_week <= 3.6


async def test_subjects_are_the_six_college_subjects(session_factory, school):
    task_subjects = await rows(session_factory, "SELECT DISTINCT subject FROM tasks")
    evaluation_subjects = await rows(session_factory, "SELECT DISTINCT subject FROM evaluations")
    assert {subject for (subject,) in task_subjects} == set(SUBJECTS)
    assert {subject for (subject,) in evaluation_subjects} == set(SUBJECTS)


async def test_history_stops_at_start_of_today(session_factory, school):
    latest = (
        await rows(
            session_factory,
            "SELECT (SELECT max(completed_at) FROM tasks), (SELECT max(updated_at) FROM tasks), "
            "(SELECT max(created_at) FROM tasks), (SELECT max(evaluated_at) FROM evaluations), "
            "(SELECT max(created_at) FROM evaluations), (SELECT max(created_at) FROM tutoring_sessions), "
            "(SELECT max(updated_at) FROM tutoring_sessions)",
        )
    )[0]
    assert all(value <= CUTOFF for value in latest)

    ordering_errors = await scalar(
        session_factory,
        "SELECT count(*) FROM tasks WHERE completed_at < created_at OR updated_at < created_at",
    )
    assert ordering_errors == 0


async def test_task_statuses_are_realistic(session_factory, school):
    statuses = dict(await rows(session_factory, "SELECT status, count(*) FROM tasks GROUP BY status"))
    assert set(statuses) == {"todo", "in_progress", "done"}
    assert statuses["done"] > statuses["todo"] + statuses["in_progress"]

    late = await scalar(session_factory, "SELECT count(*) FROM tasks WHERE completed_at > due_at")
    assert late > 0
    open_future = await scalar(
        session_factory, "SELECT count(*) FROM tasks WHERE status <> 'done' AND due_at > :cutoff", cutoff=CUTOFF
    )
    assert open_future > 0


async def test_sessions_settled_or_planned(session_factory, school):
    by_status = await rows(
        session_factory,
        "SELECT status, min(starts_at), max(starts_at + duration_minutes * interval '1 minute'), count(*) "
        "FROM tutoring_sessions GROUP BY status",
    )
    spans = {status: (first, last, count) for status, first, last, count in by_status}
    assert set(spans) == {"planned", "done", "cancelled", "no_show"}
    for status in ("done", "cancelled", "no_show"):
        assert spans[status][1] <= CUTOFF, status
    planned_first, planned_last, _ = spans["planned"]
    assert planned_first >= CUTOFF
    assert planned_last <= CUTOFF + timedelta(days=10)
    assert spans["done"][2] > spans["cancelled"][2] + spans["no_show"][2]

    durations = await rows(session_factory, "SELECT DISTINCT duration_minutes FROM tutoring_sessions")
    assert {minutes for (minutes,) in durations} <= {45, 60, 90}


async def test_loader_writes_no_outbox_rows(session_factory, school):
    assert await scalar(session_factory, "SELECT count(*) FROM outbox") == 0
    async with session_factory() as session:
        assert await audit.outbox_backlog(session) == 0


async def test_summaries_match_recomputation(session_factory, school):
    # Two refresh times, so rows are recomputed in two groups with their own rolling windows.
    half = len(school.student_ids) // 2
    async with session_factory() as session, session.begin():
        await refresh_summaries(session, school.student_ids[:half], now=CUTOFF + timedelta(hours=10))
        await refresh_summaries(session, school.student_ids[half:], now=CUTOFF + timedelta(days=3))

    async with session_factory() as session:
        check = await audit.summary_mismatches(session)
        stale = await audit.stale_summaries(session, school.student_ids)

    assert check.mismatched == []
    assert check.checked == STUDENTS
    assert stale == []


async def test_summary_mismatches_finds_wrong_rows(session_factory, school):
    wrong, aged = school.student_ids[:2]
    async with session_factory() as session, session.begin():
        await refresh_summaries(session, school.student_ids, now=CUTOFF + timedelta(hours=10))
    async with session_factory() as session, session.begin():
        await session.execute(
            text("UPDATE dashboard_summary SET open_tasks = open_tasks + 1 WHERE student_id = :id"), {"id": wrong}
        )
        # Moving refreshed_at back a month changes every rolling window of that row.
        await session.execute(
            text("UPDATE dashboard_summary SET refreshed_at = refreshed_at - interval '30 days' WHERE student_id = :id"),
            {"id": aged},
        )

    async with session_factory() as session:
        mismatches, checked = await audit.summary_mismatches(session)

    assert mismatches == sorted([wrong, aged])
    assert checked == STUDENTS
    still_aged = await scalar(
        session_factory, "SELECT count(*) FROM dashboard_summary WHERE refreshed_at < :cutoff", cutoff=CUTOFF
    )
    assert still_aged == 1


async def test_stale_summaries_finds_missing_and_old(session_factory, school):
    missing, old, fresh = school.student_ids[:3]
    async with session_factory() as session, session.begin():
        await refresh_summaries(session, [old, fresh])
    async with session_factory() as session, session.begin():
        await session.execute(text("UPDATE tasks SET updated_at = now() + interval '1 second' WHERE student_id = :id"), {"id": old})

    async with session_factory() as session:
        stale = await audit.stale_summaries(session, [missing, old, fresh])

    assert stale == sorted([missing, old])


async def insert_outbox(
    session, event_type: str, payload: dict, created_at: datetime, published_at: datetime | None = None
) -> uuid.UUID:
    row_id = uuid.uuid4()
    await session.execute(
        text(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, version, payload, headers, created_at, "
            "published_at) VALUES (:id, 'student', 'demo', :type, 1, CAST(:payload AS jsonb), '{}'::jsonb, "
            ":created_at, :published_at)"
        ),
        {
            "id": row_id,
            "type": event_type,
            "payload": json.dumps(payload),
            "created_at": created_at,
            "published_at": published_at,
        },
    )
    return row_id


async def test_outbox_published_and_backlog(session_factory, clean_db):
    since = datetime(2025, 11, 20, 10, 0, tzinfo=UTC)
    event_type = DashboardSummaryRefreshRequestedV1.TYPE
    async with session_factory() as session, session.begin():
        await insert_outbox(session, event_type, {}, since - timedelta(seconds=1), published_at=since)
        await insert_outbox(session, event_type, {}, since, published_at=since + timedelta(seconds=1))
        await insert_outbox(session, event_type, {}, since + timedelta(seconds=1))

    async with session_factory() as session:
        published = await audit.events_published(session, since)
        backlog = await audit.outbox_backlog(session)

    assert published == 1
    assert backlog == 1


async def test_refresh_latencies_pairs_requests(session_factory, clean_db):
    since = datetime(2025, 11, 20, 10, 0, tzinfo=UTC)
    requested = DashboardSummaryRefreshRequestedV1.TYPE
    completed = DashboardSummaryRefreshCompletedV1.TYPE
    student = str(uuid.uuid4())
    async with session_factory() as session, session.begin():
        await insert_outbox(session, requested, {"student_ids": [student]}, since - timedelta(seconds=5))
        first = await insert_outbox(session, requested, {"student_ids": [student]}, since)
        second = await insert_outbox(session, requested, {"student_ids": [student]}, since + timedelta(milliseconds=100))
        await insert_outbox(session, requested, {"student_ids": [student]}, since + timedelta(seconds=1))
        await insert_outbox(
            session,
            completed,
            {
                "student_ids": [student, str(uuid.uuid4())],
                "request_message_ids": [str(first), str(second)],
                "refreshed_at": (since + timedelta(milliseconds=300)).isoformat(),
            },
            since + timedelta(milliseconds=250),
        )

    async with session_factory() as session:
        latencies = await audit.refresh_latencies(session, since)

    assert latencies.requests == 3
    assert latencies.completed == 2
    assert latencies.pending == 1
    assert latencies.recomputations == 2
    assert latencies.p50_ms == pytest.approx(250)
    assert latencies.p99_ms == pytest.approx(299)


class StubApi:
    """An in-process stand-in for the write endpoints that counts writes on another coach's student."""

    def __init__(self, coaches: dict[uuid.UUID, list[uuid.UUID]], tokens: dict[uuid.UUID, str]) -> None:
        self.coach_of = {student: coach for coach, students in coaches.items() for student in students}
        self.coach_of_token = {token: coach for coach, token in tokens.items()}
        self.task_owner: dict[str, uuid.UUID] = {}
        self.session_owner: dict[str, uuid.UUID] = {}
        self.completed: Counter[str] = Counter()
        self.foreign_writes = 0
        self.app = FastAPI()
        self._routes()

    def _coach(self, request: Request) -> uuid.UUID:
        return self.coach_of_token[request.headers["authorization"].removeprefix("Bearer ")]

    def _check_student(self, request: Request, student_id: uuid.UUID) -> None:
        if self.coach_of.get(student_id) != self._coach(request):
            self.foreign_writes += 1

    def _routes(self) -> None:
        app = self.app

        @app.post("/students/{student_id}/tasks", status_code=201)
        async def create_task(student_id: uuid.UUID, request: Request):
            body = await request.json()
            if body["subject"] not in SUBJECTS or not body["title"]:
                return JSONResponse({"detail": "invalid"}, status_code=422)
            datetime.fromisoformat(body["due_at"])
            self._check_student(request, student_id)
            task_id = str(uuid.uuid4())
            self.task_owner[task_id] = student_id
            return {"id": task_id}

        @app.post("/tasks/{task_id}/complete")
        async def complete_task(task_id: str, request: Request):
            if task_id not in self.task_owner:
                return JSONResponse({"detail": "unknown task"}, status_code=404)
            self._check_student(request, self.task_owner[task_id])
            self.completed[task_id] += 1
            return {"id": task_id}

        @app.patch("/tasks/{task_id}")
        async def update_task(task_id: str, request: Request):
            if task_id not in self.task_owner:
                return JSONResponse({"detail": "unknown task"}, status_code=404)
            self._check_student(request, self.task_owner[task_id])
            return {"id": task_id}

        @app.post("/students/{student_id}/evaluations", status_code=201)
        async def record_evaluation(student_id: uuid.UUID, request: Request):
            body = await request.json()
            if not 0 <= body["score"] <= body["max_score"] == 20:
                return JSONResponse({"detail": "invalid"}, status_code=422)
            self._check_student(request, student_id)
            return {"id": str(uuid.uuid4())}

        @app.post("/students/{student_id}/sessions", status_code=201)
        async def log_session(student_id: uuid.UUID, request: Request):
            body = await request.json()
            if body["duration_minutes"] not in (45, 60, 90) or body["status"] != "planned":
                return JSONResponse({"detail": "invalid"}, status_code=422)
            self._check_student(request, student_id)
            session_id = str(uuid.uuid4())
            self.session_owner[session_id] = student_id
            return {"id": session_id}

        @app.patch("/sessions/{session_id}")
        async def update_session(session_id: str, request: Request):
            if session_id not in self.session_owner:
                return JSONResponse({"detail": "unknown session"}, status_code=404)
            self._check_student(request, self.session_owner[session_id])
            return {"id": session_id}


@asynccontextmanager
async def serve(app) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 and yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started or serving.done()

    try:
        await wait_for(started, what="uvicorn start")
        if serving.done():
            serving.result()
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def stub_api():
    coaches = {uuid.uuid4(): [uuid.uuid4() for _ in range(5)] for _ in range(3)}
    tokens = {coach: f"token-{index}" for index, coach in enumerate(coaches)}
    stub = StubApi(coaches, tokens)
    async with serve(stub.app) as base_url:
        yield stub, base_url, coaches, tokens


async def test_workload_writes_as_each_coach(stub_api):
    stub, base_url, coaches, tokens = stub_api

    result = await drive_workload(
        base_url, tokens, list(coaches.items()), rate=100, duration=2.0, seed=3, subjects=SUBJECTS
    )

    assert result.scheduled == 200
    assert result.attempted + result.not_sent == result.scheduled
    assert result.failed_by_status == {}
    assert result.succeeded == result.attempted
    assert stub.foreign_writes == 0
    assert set(result.touched_student_ids) <= set(stub.coach_of)


async def test_workload_completes_only_its_own_tasks_once(stub_api):
    stub, base_url, coaches, tokens = stub_api

    result = await drive_workload(
        base_url, tokens, list(coaches.items()), rate=100, duration=2.0, seed=5, subjects=SUBJECTS
    )

    kinds = result.by_kind
    assert kinds[CREATE_TASK] > kinds[COMPLETE_TASK] > 0
    assert kinds[RECORD_EVALUATION] > 0
    assert set(kinds) == {"create_task", "complete_task", "update_task", "record_evaluation", "log_session", "update_session"}
    assert max(stub.completed.values()) == 1
    assert all(record.sent_at <= record.responded_at for record in result.records)


async def test_workload_rejects_missing_token(stub_api):
    _, base_url, coaches, tokens = stub_api
    first_coach = next(iter(coaches))
    partial = {coach: token for coach, token in tokens.items() if coach != first_coach}

    with pytest.raises(ValueError, match="no bearer token"):
        await drive_workload(base_url, partial, list(coaches.items()), rate=10, duration=1, seed=1, subjects=SUBJECTS)


async def test_workload_against_api(settings, engine, session_factory, school):
    tokens = {coach: mint_token(settings, coach, Role.COACH) for coach, _ in school.coaches}

    async with serve(create_app(settings, engine)) as base_url:
        result = await drive_workload(base_url, tokens, school.coaches, rate=40, duration=2.0, seed=11)

    assert result.attempted > 0
    assert result.failed_by_status == {}
    requested = await scalar(
        session_factory, "SELECT count(*) FROM outbox WHERE type = :type", type=DashboardSummaryRefreshRequestedV1.TYPE
    )
    assert requested == result.succeeded
    touched = result.touched_student_ids
    async with session_factory() as session:
        assert await audit.outbox_backlog(session) == result.succeeded
        assert await audit.stale_summaries(session, touched) == touched

    async with session_factory() as session, session.begin():
        await refresh_summaries(session, touched)

    async with session_factory() as session:
        assert await audit.stale_summaries(session, touched) == []
        assert await audit.summary_mismatches(session) == ([], len(touched))
