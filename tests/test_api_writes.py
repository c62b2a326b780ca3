"""API writes: each commits its domain row and one summary refresh request, or neither."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from dashboard_jobs.api.app import create_app
from dashboard_jobs.domain import services
from dashboard_jobs.domain.models import Evaluation, OutboxMessage, Task, TutoringSession
from dashboard_jobs.domain.summary import refresh_summaries
from tests.factories import auth_headers, client, count_rows, refresh_requests, school  # noqa: F401

PROBLEM_JSON = "application/problem+json"


def in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def assert_one_refresh_request(rows: list[OutboxMessage], student_id: uuid.UUID, reason: str) -> OutboxMessage:
    assert len(rows) == 1
    row = rows[0]
    assert row.aggregatetype == "student"
    assert row.aggregateid == str(student_id)
    assert row.payload["student_ids"] == [str(student_id)]
    assert row.payload["reason"] == reason
    assert row.published_at is None
    return row


async def create_task(client, settings, principal, student_id, **overrides) -> dict:
    body = {"title": "Exercices 3 à 7 p. 52", "subject": "mathematiques", "due_at": in_days(3), **overrides}
    response = await client.post(
        f"/students/{student_id}/tasks", json=body, headers=auth_headers(settings, principal)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def log_session(client, settings, principal, student_id, **overrides) -> dict:
    body = {"starts_at": in_days(2), "duration_minutes": 60, **overrides}
    response = await client.post(
        f"/students/{student_id}/sessions", json=body, headers=auth_headers(settings, principal)
    )
    assert response.status_code == 201, response.text
    return response.json()


# Each write commits its row and exactly one refresh request


async def test_create_task_commits_refresh_request(client, settings, session_factory, school, caplog):
    correlation_id = uuid.uuid4()
    due_at = datetime(2031, 3, 2, 17, 0, tzinfo=UTC)
    with caplog.at_level(logging.INFO, logger="dashboard_jobs.api.routes.tasks"):
        response = await client.post(
            f"/students/{school.student_id}/tasks",
            json={"title": "  Rédaction : portrait  ", "subject": "francais", "due_at": "2031-03-02T18:00:00+01:00"},
            headers=auth_headers(settings, school.coach, **{"X-Correlation-ID": str(correlation_id)}),
        )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["title"] == "Rédaction : portrait"
    assert body["status"] == "todo"
    assert body["completed_at"] is None
    assert body["created_by"] == str(school.coach.account_id)
    assert datetime.fromisoformat(body["due_at"]) == due_at
    async with session_factory() as session:
        task = await session.get(Task, uuid.UUID(body["id"]))
    assert task is not None
    assert task.due_at == due_at
    row = assert_one_refresh_request(await refresh_requests(session_factory), school.student_id, "task.created")
    assert row.headers["correlation_id"] == str(correlation_id)
    [record] = [record for record in caplog.records if record.getMessage() == "task created"]
    assert record.levelno == logging.INFO
    assert record.student_id == str(school.student_id)
    assert record.outbox_id == str(row.id)


async def test_update_task_commits_refresh_request(client, settings, session_factory, school):
    task = await create_task(client, settings, school.coach, school.student_id)

    response = await client.patch(
        f"/tasks/{task['id']}",
        json={"title": "Exercices 8 à 10", "subject": "physique-chimie", "status": "in_progress"},
        headers=auth_headers(settings, school.coach),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["title"], body["subject"], body["status"]) == ("Exercices 8 à 10", "physique-chimie", "in_progress")
    assert body["due_at"] == task["due_at"]
    async with session_factory() as session:
        stored = await session.get(Task, uuid.UUID(task["id"]))
    assert stored.subject == "physique-chimie"
    rows = await refresh_requests(session_factory)
    assert [row.payload["reason"] for row in rows] == ["task.created", "task.updated"]
    assert_one_refresh_request(rows[1:], school.student_id, "task.updated")


async def test_task_status_keeps_completed_at_consistent(client, settings, school):
    task = await create_task(client, settings, school.coach, school.student_id)
    headers = auth_headers(settings, school.coach)

    done = (await client.patch(f"/tasks/{task['id']}", json={"status": "done"}, headers=headers)).json()
    done_again = (await client.patch(f"/tasks/{task['id']}", json={"status": "done"}, headers=headers)).json()
    reopened = (await client.patch(f"/tasks/{task['id']}", json={"status": "todo"}, headers=headers)).json()

    assert done["completed_at"] is not None
    assert done_again["completed_at"] == done["completed_at"]
    assert reopened["status"] == "todo"
    assert reopened["completed_at"] is None


async def test_complete_task_commits_refresh_request(client, settings, session_factory, school):
    task = await create_task(client, settings, school.admin, school.student_id)

    response = await client.post(f"/tasks/{task['id']}/complete", headers=auth_headers(settings, school.coach))

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "done"
    assert response.json()["completed_at"] is not None
    rows = await refresh_requests(session_factory)
    assert_one_refresh_request(rows[1:], school.student_id, "task.completed")


async def test_complete_task_twice_is_conflict(client, settings, session_factory, school):
    task = await create_task(client, settings, school.coach, school.student_id)
    headers = auth_headers(settings, school.coach)
    first = await client.post(f"/tasks/{task['id']}/complete", headers=headers)

    second = await client.post(f"/tasks/{task['id']}/complete", headers=headers)

    assert second.status_code == 409
    assert second.headers["content-type"] == PROBLEM_JSON
    assert second.json()["detail"] == "Cette tâche est déjà terminée."
    async with session_factory() as session:
        stored = await session.get(Task, uuid.UUID(task["id"]))
    assert stored.completed_at == datetime.fromisoformat(first.json()["completed_at"])
    assert len(await refresh_requests(session_factory)) == 2


async def test_record_evaluation_commits_with_defaults(client, settings, session_factory, school):
    before = datetime.now(UTC)
    response = await client.post(
        f"/students/{school.student_id}/evaluations",
        json={"subject": "anglais", "score": 14.5},
        headers=auth_headers(settings, school.coach),
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["score"] == 14.5
    assert body["max_score"] == 20
    assert datetime.fromisoformat(body["evaluated_at"]) >= before
    async with session_factory() as session:
        evaluation = await session.get(Evaluation, uuid.UUID(body["id"]))
    assert evaluation.score == Decimal("14.5")
    assert_one_refresh_request(await refresh_requests(session_factory), school.student_id, "evaluation.recorded")


async def test_coach_session_records_caller(client, settings, session_factory, school):
    body = await log_session(client, settings, school.coach, school.student_id, duration_minutes=90)

    assert body["coach_id"] == str(school.coach.account_id)
    assert body["status"] == "planned"
    assert body["duration_minutes"] == 90
    async with session_factory() as session:
        assert await session.get(TutoringSession, uuid.UUID(body["id"])) is not None
    assert_one_refresh_request(await refresh_requests(session_factory), school.student_id, "session.logged")


async def test_admin_session_needs_coach_id(client, settings, session_factory, school):
    headers = auth_headers(settings, school.admin)
    path = f"/students/{school.student_id}/sessions"

    without = await client.post(path, json={"starts_at": in_days(1), "duration_minutes": 45}, headers=headers)
    not_a_coach = await client.post(
        path,
        json={"starts_at": in_days(1), "duration_minutes": 45, "coach_id": str(school.parent.account_id)},
        headers=headers,
    )
    named = await client.post(
        path,
        json={"starts_at": in_days(1), "duration_minutes": 45, "coach_id": str(school.coach.account_id)},
        headers=headers,
    )

    assert without.status_code == 422
    assert without.json()["errors"][0]["field"] == "coach_id"
    assert not_a_coach.status_code == 422
    assert not_a_coach.json()["errors"][0]["value"] == str(school.parent.account_id)
    assert named.status_code == 201, named.text
    assert named.json()["coach_id"] == str(school.coach.account_id)
    assert len(await refresh_requests(session_factory)) == 1


async def test_coach_cannot_name_other_coach(client, settings, school):
    response = await client.post(
        f"/students/{school.student_id}/sessions",
        json={"starts_at": in_days(1), "duration_minutes": 45, "coach_id": str(school.other_coach.account_id)},
        headers=auth_headers(settings, school.coach),
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "coach_id.not_self"


async def test_update_session_commits_refresh_request(client, settings, session_factory, school):
    logged = await log_session(client, settings, school.coach, school.student_id)
    starts_at = datetime(2020, 5, 4, 16, 30, tzinfo=UTC)

    response = await client.patch(
        f"/sessions/{logged['id']}",
        json={"status": "done", "duration_minutes": 75, "starts_at": starts_at.isoformat()},
        headers=auth_headers(settings, school.coach),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["duration_minutes"]) == ("done", 75)
    assert datetime.fromisoformat(body["starts_at"]) == starts_at
    rows = await refresh_requests(session_factory)
    assert_one_refresh_request(rows[1:], school.student_id, "session.updated")


# Access on writes


WRITES_ON_STUDENT = [
    ("tasks", {"title": "Lire le chapitre 2", "subject": "svt", "due_at": "2031-01-10T08:00:00+00:00"}),
    ("evaluations", {"subject": "svt", "score": 12}),
    ("sessions", {"starts_at": "2031-01-10T08:00:00+00:00", "duration_minutes": 60}),
]


@pytest.mark.parametrize(("collection", "body"), WRITES_ON_STUDENT)
async def test_parent_cannot_write(client, settings, session_factory, school, collection, body):
    response = await client.post(
        f"/students/{school.student_id}/{collection}", json=body, headers=auth_headers(settings, school.parent)
    )

    assert response.status_code == 403
    assert response.json()["detail"] == "Un compte parent peut consulter les données mais pas les modifier."
    assert await count_rows(session_factory, OutboxMessage) == 0


@pytest.mark.parametrize(("collection", "body"), WRITES_ON_STUDENT)
async def test_coach_foreign_or_unknown_student_403(client, settings, session_factory, school, collection, body):
    headers = auth_headers(settings, school.coach)

    foreign = await client.post(f"/students/{school.other_student_id}/{collection}", json=body, headers=headers)
    unknown = await client.post(f"/students/{uuid.uuid4()}/{collection}", json=body, headers=headers)

    assert foreign.status_code == unknown.status_code == 403
    assert without_instance(foreign.json()) == without_instance(unknown.json())
    assert await count_rows(session_factory, OutboxMessage) == 0


async def test_admin_write_on_unknown_student_is_404(client, settings, school):
    response = await client.post(
        f"/students/{uuid.uuid4()}/evaluations",
        json={"subject": "svt", "score": 12},
        headers=auth_headers(settings, school.admin),
    )

    assert response.status_code == 404
    assert response.json()["type"] == "urn:dashboard-jobs:problem:not-found"


async def test_row_writes_check_row_student(client, settings, session_factory, school):
    foreign_task = await create_task(client, settings, school.other_coach, school.other_student_id)
    foreign_session = await log_session(client, settings, school.other_coach, school.other_student_id)
    coach = auth_headers(settings, school.coach)
    parent = auth_headers(settings, school.other_parent)

    responses = {
        "foreign task": await client.patch(f"/tasks/{foreign_task['id']}", json={"title": "x"}, headers=coach),
        "unknown task": await client.patch(f"/tasks/{uuid.uuid4()}", json={"title": "x"}, headers=coach),
        "foreign completion": await client.post(f"/tasks/{foreign_task['id']}/complete", headers=coach),
        "unknown completion": await client.post(f"/tasks/{uuid.uuid4()}/complete", headers=coach),
        "foreign session": await client.patch(f"/sessions/{foreign_session['id']}", json={"status": "done"}, headers=coach),
        "unknown session": await client.patch(f"/sessions/{uuid.uuid4()}", json={"status": "done"}, headers=coach),
        "parent's own child's task": await client.patch(f"/tasks/{foreign_task['id']}", json={"title": "x"}, headers=parent),
    }

    assert {name: response.status_code for name, response in responses.items()} == dict.fromkeys(responses, 403)
    bodies = {name: without_instance(response.json()) for name, response in responses.items()}
    task_names = ["foreign task", "unknown task", "foreign completion", "unknown completion"]
    assert all(bodies[name] == bodies["foreign task"] for name in task_names)
    assert bodies["foreign task"]["detail"] == "Votre compte n'a pas accès à cette tâche."
    assert bodies["unknown session"] == bodies["foreign session"]
    assert bodies["foreign session"]["detail"] == "Votre compte n'a pas accès à cette séance."
    assert bodies["parent's own child's task"]["detail"] == "Un compte parent peut consulter les données mais pas les modifier."
    assert len(await refresh_requests(session_factory)) == 2


async def test_row_access_403_in_english(client, settings, school):
    foreign_task = await create_task(client, settings, school.other_coach, school.other_student_id)
    foreign_session = await log_session(client, settings, school.other_coach, school.other_student_id)
    coach = auth_headers(settings, school.coach, **{"Accept-Language": "en"})

    foreign_task_response = await client.patch(f"/tasks/{foreign_task['id']}", json={"title": "x"}, headers=coach)
    unknown_task_response = await client.patch(f"/tasks/{uuid.uuid4()}", json={"title": "x"}, headers=coach)
    foreign_session_response = await client.patch(
        f"/sessions/{foreign_session['id']}", json={"status": "done"}, headers=coach
    )
    unknown_session_response = await client.patch(f"/sessions/{uuid.uuid4()}", json={"status": "done"}, headers=coach)

    assert without_instance(foreign_task_response.json()) == without_instance(unknown_task_response.json())
    assert foreign_task_response.json()["detail"] == "Your account has no access to this task."
    assert without_instance(foreign_session_response.json()) == without_instance(unknown_session_response.json())
    assert foreign_session_response.json()["detail"] == "Your account has no access to this tutoring session."


async def test_admin_unknown_task_or_session_404(client, settings, school):
    headers = auth_headers(settings, school.admin)

    task = await client.patch(f"/tasks/{uuid.uuid4()}", json={"title": "x"}, headers=headers)
    tutoring_session = await client.patch(f"/sessions/{uuid.uuid4()}", json={"status": "done"}, headers=headers)

    assert task.status_code == 404
    assert task.json()["detail"].startswith("Aucune tâche n'a l'identifiant")
    assert tutoring_session.status_code == 404
    assert tutoring_session.json()["detail"].startswith("Aucune séance n'a l'identifiant")


def without_instance(problem: dict) -> dict:
    return {key: value for key, value in problem.items() if key != "instance"}


# Failures leave neither row


async def test_constraint_violation_leaves_nothing(
    client, settings, session_factory, school, monkeypatch
):
    real_add_event = services.add_event

    async def add_event_then_break_the_task(session, event, **kwargs):
        message_id = await real_add_event(session, event, **kwargs)
        # Violates ck_tasks_completed_at: status done without a completion time.
        await session.execute(text("UPDATE tasks SET status = 'done' WHERE completed_at IS NULL"))
        return message_id

    monkeypatch.setattr(services, "add_event", add_event_then_break_the_task)

    response = await client.post(
        f"/students/{school.student_id}/tasks",
        json={"title": "Fiche de révision", "subject": "svt", "due_at": in_days(1)},
        headers=auth_headers(settings, school.coach),
    )

    assert response.status_code == 500
    assert await count_rows(session_factory, Task) == 0
    assert await count_rows(session_factory, OutboxMessage) == 0


async def test_unexpected_error_generic_500(
    client, settings, session_factory, school, monkeypatch, caplog
):
    async def fail(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services, "add_event", fail)

    with caplog.at_level(logging.ERROR, logger="dashboard_jobs.api.problems"):
        response = await client.post(
            f"/students/{school.student_id}/evaluations",
            json={"subject": "svt", "score": 12},
            headers=auth_headers(settings, school.coach, **{"Accept-Language": "en"}),
        )

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert "secret internals" not in response.text
    assert body["detail"].startswith("An internal error occurred.")
    assert body["error_id"] in body["detail"]
    [record] = [record for record in caplog.records if record.getMessage() == "request failed"]
    assert record.error_id == body["error_id"]
    assert record.exc_info is not None
    assert await count_rows(session_factory, Evaluation) == 0


# Validation problems


async def test_unknown_subject_422_in_french(client, settings, session_factory, school):
    response = await client.post(
        f"/students/{school.student_id}/tasks",
        json={"title": "Déclinaisons", "subject": "latin", "due_at": in_days(1)},
        headers=auth_headers(settings, school.coach),
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["content-language"] == "fr"
    body = response.json()
    assert body["type"] == "urn:dashboard-jobs:problem:validation"
    assert body["title"] == "Données invalides"
    assert body["status"] == 422
    assert body["instance"] == f"/students/{school.student_id}/tasks"
    assert body["detail"].startswith('Valeur invalide pour « subject » : "latin". Cette matière n\'existe pas.')
    assert body["errors"] == [
        {
            "field": "subject",
            "location": "body",
            "code": "subject.unknown",
            "value": "latin",
            "message": "Cette matière n'existe pas. Matières acceptées : francais, mathematiques, "
            "histoire-geographie, anglais, physique-chimie, svt.",
        }
    ]
    assert await count_rows(session_factory, Task) == 0


async def test_validation_problem_in_english(client, settings, school):
    response = await client.post(
        f"/students/{school.student_id}/evaluations",
        json={"subject": "svt", "score": 25},
        headers=auth_headers(settings, school.coach, **{"Accept-Language": "de;q=0.9, en-GB;q=0.8, fr;q=0.5"}),
    )

    assert response.status_code == 422
    assert response.headers["content-language"] == "en"
    body = response.json()
    assert body["title"] == "Invalid input"
    assert body["detail"] == "Invalid value for 'score': 25. The score must be between 0 and 20."
    assert body["errors"][0]["field"] == "score"
    assert body["errors"][0]["value"] == 25


@pytest.mark.parametrize(
    ("body", "field", "code", "value"),
    [
        ({"subject": "svt", "due_at": "2031-01-01T00:00:00Z"}, "title", "missing", None),
        ({"title": " ", "subject": "svt", "due_at": "2031-01-01T00:00:00Z"}, "title", "title.blank", " "),
        ({"title": "x" * 201, "subject": "svt", "due_at": "2031-01-01T00:00:00Z"}, "title", "title.too_long", "x" * 100 + "…"),
        ({"title": "t", "subject": "svt", "due_at": "2031-01-01T08:00:00"}, "due_at", "datetime.naive", "2031-01-01T08:00:00"),
        ({"title": "t", "subject": "svt", "due_at": "demain"}, "due_at", "datetime_from_date_parsing", "demain"),
        ({"title": "t", "subject": "svt", "due_at": "2031-01-01T00:00:00Z", "priority": 1}, "priority", "extra_forbidden", 1),
    ],
)
async def test_task_create_rejects_invalid_fields(client, settings, school, body, field, code, value):
    response = await client.post(
        f"/students/{school.student_id}/tasks", json=body, headers=auth_headers(settings, school.coach)
    )

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["code"]) == (field, code)
    assert error.get("value") == value
    assert error["message"]


async def test_several_invalid_fields_are_listed_together(client, settings, school):
    response = await client.post(
        f"/students/{school.student_id}/evaluations",
        json={"subject": "latin", "score": 3.125, "evaluated_at": "2031-01-01T08:00:00"},
        headers=auth_headers(settings, school.coach),
    )

    assert response.status_code == 422
    body = response.json()
    assert {error["field"] for error in body["errors"]} == {"subject", "score", "evaluated_at"}
    assert body["detail"].startswith("Champs invalides : evaluated_at, score, subject.")


@pytest.mark.parametrize(
    ("collection", "body", "field", "code"),
    [
        ("sessions", {"starts_at": "2031-01-01T08:00:00Z", "duration_minutes": 0}, "duration_minutes", "duration.out_of_range"),
        ("sessions", {"starts_at": "2031-01-01T08:00:00Z", "duration_minutes": 601}, "duration_minutes", "duration.out_of_range"),
        ("sessions", {"starts_at": "2031-01-01T08:00:00Z", "duration_minutes": "une heure"}, "duration_minutes", "int_parsing"),
        ("sessions", {"starts_at": "2031-01-01T08:00:00Z", "duration_minutes": 30, "status": "late"}, "status", "choice.unknown"),
        ("evaluations", {"subject": "svt", "score": -1}, "score", "score.out_of_range"),
        ("evaluations", {"subject": "svt", "score": 5, "max_score": 0}, "max_score", "max_score.out_of_range"),
        ("evaluations", {"subject": "svt", "score": "NaN"}, "score", "finite_number"),
    ],
)
async def test_session_and_evaluation_rules(client, settings, school, collection, body, field, code):
    response = await client.post(
        f"/students/{school.student_id}/{collection}", json=body, headers=auth_headers(settings, school.coach)
    )

    assert response.status_code == 422
    assert [(error["field"], error["code"]) for error in response.json()["errors"]] == [(field, code)]


async def test_patch_rejects_null_and_empty_bodies(client, settings, school):
    task = await create_task(client, settings, school.coach, school.student_id)
    headers = auth_headers(settings, school.coach)

    null_title = await client.patch(f"/tasks/{task['id']}", json={"title": None}, headers=headers)
    empty = await client.patch(f"/tasks/{task['id']}", json={}, headers=headers)

    assert null_title.status_code == 422
    assert null_title.json()["errors"][0]["field"] == "title"
    assert null_title.json()["errors"][0]["code"] == "null_not_allowed"
    assert empty.status_code == 422
    assert empty.json()["errors"][0]["code"] == "update_empty"
    assert "title, subject, due_at, status" in empty.json()["detail"]


async def test_malformed_ids_and_headers_are_422(client, settings, school):
    headers = auth_headers(settings, school.coach)

    bad_path = await client.post("/tasks/not-a-uuid/complete", headers=headers)
    bad_header = await client.post(
        f"/students/{school.student_id}/evaluations",
        json={"subject": "svt", "score": 12},
        headers={**headers, "X-Correlation-ID": "abc"},
    )
    bad_json = await client.post(
        f"/students/{school.student_id}/evaluations",
        content=b'{"subject": ',
        headers={**headers, "Content-Type": "application/json"},
    )

    assert bad_path.status_code == 422
    assert bad_path.json()["errors"][0] | {"message": None} == {
        "field": "task_id", "location": "path", "code": "uuid_parsing", "value": "not-a-uuid", "message": None
    }
    assert bad_header.status_code == 422
    assert bad_header.json()["errors"][0]["field"] == "X-Correlation-ID"
    assert bad_header.json()["errors"][0]["location"] == "header"
    assert bad_json.status_code == 422
    assert bad_json.json()["errors"][0]["code"] == "json_invalid"


# Input at the edges: calendar limits, non-finite numbers, body size, encoding and content type


EDGE_DATES = [
    ("tasks", {"title": "t", "subject": "svt", "due_at": "0001-01-01T00:00:00+14:00"}, "due_at"),
    ("tasks", {"title": "t", "subject": "svt", "due_at": "9999-12-31T23:59:59-12:00"}, "due_at"),
    ("evaluations", {"subject": "svt", "score": 12, "evaluated_at": "0001-01-01T00:00:00+01:00"}, "evaluated_at"),
    ("sessions", {"starts_at": "9999-12-31T23:00:00-05:00", "duration_minutes": 60}, "starts_at"),
]


@pytest.mark.parametrize(("collection", "body", "field"), EDGE_DATES)
async def test_dates_outside_window_422(client, settings, session_factory, school, collection, body, field):
    path = f"/students/{school.student_id}/{collection}"
    value = body[field]

    french = await client.post(path, json=body, headers=auth_headers(settings, school.coach))
    english = await client.post(path, json=body, headers=auth_headers(settings, school.coach, **{"Accept-Language": "en"}))

    assert french.status_code == english.status_code == 422
    [error] = french.json()["errors"]
    assert (error["field"], error["code"], error["value"]) == (field, "datetime_out_of_range", value)
    assert french.json()["detail"] == (
        f'Valeur invalide pour « {field} » : "{value}". L\'année de la date doit être comprise entre 2000 et 2100.'
    )
    assert english.json()["detail"] == (
        f"Invalid value for '{field}': \"{value}\". The date's year must be between 2000 and 2100."
    )
    assert await count_rows(session_factory, OutboxMessage) == 0


async def test_patch_dates_outside_window_422(client, settings, school):
    task = await create_task(client, settings, school.coach, school.student_id)
    logged = await log_session(client, settings, school.coach, school.student_id)
    headers = auth_headers(settings, school.coach)

    task_response = await client.patch(f"/tasks/{task['id']}", json={"due_at": "0001-01-01T00:00:00+14:00"}, headers=headers)
    session_response = await client.patch(
        f"/sessions/{logged['id']}", json={"starts_at": "9999-12-31T23:00:00-05:00"}, headers=headers
    )

    assert task_response.status_code == 422
    assert task_response.json()["errors"][0]["code"] == "datetime_out_of_range"
    assert session_response.status_code == 422
    assert session_response.json()["errors"][0]["code"] == "datetime_out_of_range"


@pytest.mark.parametrize("due_at", ["2000-01-01T00:00:00+14:00", "2100-12-31T23:59:59-12:00"])
async def test_dates_at_window_ends_stored(client, settings, school, due_at):
    task = await create_task(client, settings, school.coach, school.student_id, due_at=due_at)

    assert datetime.fromisoformat(task["due_at"]) == datetime.fromisoformat(due_at)


async def test_evaluation_in_future_is_422(client, settings, session_factory, school):
    path = f"/students/{school.student_id}/evaluations"
    headers = auth_headers(settings, school.coach)
    within_clock_skew = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()

    future = await client.post(
        path, json={"subject": "svt", "score": 12, "evaluated_at": "2030-06-01T10:00:00+02:00"}, headers=headers
    )
    english = await client.post(
        path,
        json={"subject": "svt", "score": 12, "evaluated_at": "2030-06-01T10:00:00+02:00"},
        headers={**headers, "Accept-Language": "en"},
    )
    slightly_ahead = await client.post(
        path, json={"subject": "svt", "score": 12, "evaluated_at": within_clock_skew}, headers=headers
    )

    assert future.status_code == 422
    [error] = future.json()["errors"]
    assert (error["field"], error["code"], error["value"]) == ("evaluated_at", "datetime_in_future", "2030-06-01T10:00:00+02:00")
    assert error["message"].startswith("Une évaluation ne peut pas être datée dans le futur.")
    assert english.json()["errors"][0]["message"].startswith("An evaluation cannot be dated in the future.")
    assert slightly_ahead.status_code == 201, slightly_ahead.text
    assert await count_rows(session_factory, Evaluation) == 1


@pytest.mark.parametrize(("literal", "echoed"), [("NaN", "NaN"), ("1e400", "Infinity"), ("-Infinity", "-Infinity")])
async def test_non_finite_score_is_422(client, settings, session_factory, school, literal, echoed):
    response = await client.post(
        f"/students/{school.student_id}/evaluations",
        content=f'{{"subject": "svt", "score": {literal}}}',
        headers=auth_headers(settings, school.coach, **{"Content-Type": "application/json"}),
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    [error] = response.json()["errors"]
    assert (error["field"], error["code"], error["value"]) == ("score", "finite_number", echoed)
    assert error["message"] == "Un nombre fini est attendu."
    assert await count_rows(session_factory, Evaluation) == 0


async def test_patch_with_nan_is_422(client, settings, school):
    logged = await log_session(client, settings, school.coach, school.student_id)

    response = await client.patch(
        f"/sessions/{logged['id']}",
        content='{"duration_minutes": NaN}',
        headers=auth_headers(settings, school.coach, **{"Content-Type": "application/json"}),
    )

    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert (error["field"], error["code"], error["value"]) == ("duration_minutes", "finite_number", "NaN")


async def test_huge_score_is_echoed_as_text(client, settings, school):
    response = await client.post(
        f"/students/{school.student_id}/evaluations",
        json={"subject": "svt", "score": "1e5000"},
        headers=auth_headers(settings, school.coach),
    )

    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert (error["field"], error["code"], error["value"]) == ("score", "score.out_of_range", "1E+5000")


SMALL_BODY_LIMIT = 1024


@pytest.fixture
async def small_body_client(settings, engine):
    limited = settings.model_copy(update={"api_max_body_bytes": SMALL_BODY_LIMIT})
    app = create_app(limited, engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        yield client


class CountedChunks:
    """An async request body of ``count`` chunks that records how many the server read."""

    def __init__(self, count: int, size: int) -> None:
        self.count = count
        self.size = size
        self.read = 0

    async def __aiter__(self):
        for _ in range(self.count):
            self.read += 1
            yield b" " * self.size


async def test_declared_body_over_limit_413(small_body_client, settings, session_factory, school):
    body = CountedChunks(count=100, size=SMALL_BODY_LIMIT)
    headers = auth_headers(settings, school.coach, **{"Content-Type": "application/json"})

    response = await small_body_client.post(
        f"/students/{school.student_id}/evaluations",
        content=body,
        headers={**headers, "Content-Length": str(body.count * body.size)},
    )
    english = await small_body_client.post(
        f"/students/{school.student_id}/evaluations",
        content=b" " * (SMALL_BODY_LIMIT + 1),
        headers={**headers, "Accept-Language": "en"},
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["detail"] == (
        "Le corps de la requête dépasse la taille maximale de 1024 octets. Envoyez un corps plus petit."
    )
    assert body.read == 0
    assert english.status_code == 413
    assert english.json()["detail"] == "The request body is larger than the maximum of 1024 bytes. Send a smaller body."
    assert await count_rows(session_factory, Evaluation) == 0


async def test_streamed_body_over_limit_413(small_body_client, settings, session_factory, school):
    body = CountedChunks(count=100, size=SMALL_BODY_LIMIT // 4)

    response = await small_body_client.post(
        f"/students/{school.student_id}/evaluations",
        content=body,
        headers=auth_headers(settings, school.coach, **{"Content-Type": "application/json"}),
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status"] == 413
    assert response.json()["detail"].startswith("Le corps de la requête dépasse la taille maximale de 1024 octets.")
    assert body.read == 5
    assert await count_rows(session_factory, Evaluation) == 0


async def test_body_within_limit_is_accepted(small_body_client, settings, school):
    response = await small_body_client.post(
        f"/students/{school.student_id}/evaluations",
        json={"subject": "svt", "score": 12},
        headers=auth_headers(settings, school.coach),
    )

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content",
    [b'{"subject": "svt", "score": 12, "comment": "\xff\xfe"}', b"[" * 10_000 + b"]" * 10_000],
    ids=["invalid utf-8", "deeply nested"],
)
async def test_unreadable_body_400_translated(client, settings, school, content):
    path = f"/students/{school.student_id}/evaluations"
    headers = auth_headers(settings, school.coach, **{"Content-Type": "application/json"})

    french = await client.post(path, content=content, headers=headers)
    english = await client.post(path, content=content, headers={**headers, "Accept-Language": "en"})

    assert french.status_code == english.status_code == 400
    assert french.headers["content-type"] == PROBLEM_JSON
    assert french.headers["content-language"] == "fr"
    assert french.json()["title"] == "Requête incorrecte"
    assert french.json()["detail"] == (
        "Le corps de la requête est illisible. Envoyez un JSON valide, encodé en UTF-8, "
        "sans imbrication excessive."
    )
    assert english.json()["detail"] == (
        "The request body cannot be read. Send valid JSON, encoded in UTF-8, without excessive nesting."
    )


@pytest.mark.parametrize("content_type", ["text/plain", None])
async def test_json_body_needs_json_content_type(client, settings, session_factory, school, content_type):
    headers = auth_headers(settings, school.coach)
    if content_type is not None:
        headers["Content-Type"] = content_type
    task = await create_task(client, settings, school.coach, school.student_id)

    created = await client.post(
        f"/students/{school.student_id}/evaluations", content=json.dumps({"subject": "svt", "score": 12}), headers=headers
    )
    changed = await client.patch(
        f"/tasks/{task['id']}", content=json.dumps({"title": "x"}), headers={**headers, "Accept-Language": "en"}
    )

    assert created.status_code == 415
    assert created.headers["content-type"] == PROBLEM_JSON
    assert created.json()["detail"] == (
        "Le corps de la requête doit être du JSON. Envoyez l'en-tête « Content-Type: application/json »."
    )
    assert changed.status_code == 415
    assert changed.json()["detail"] == "The request body must be JSON. Send the 'Content-Type: application/json' header."
    assert await count_rows(session_factory, Evaluation) == 0


async def test_unknown_route_is_404_problem(client):
    response = await client.get("/nowhere", headers={"Accept-Language": "en"})

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"] == "about:blank"
    assert response.json()["detail"] == "No resource matches this URL."


# Dashboard


async def test_dashboard_pending_until_summary_exists(client, settings, session_factory, school):
    headers = auth_headers(settings, school.parent)
    await create_task(client, settings, school.coach, school.student_id, due_at=in_days(-1))

    pending = await client.get(f"/students/{school.student_id}/dashboard", headers=headers)
    pending_en = await client.get(
        f"/students/{school.student_id}/dashboard", headers={**headers, "Accept-Language": "en-US,en;q=0.9"}
    )
    async with session_factory() as session, session.begin():
        await refresh_summaries(session, [school.student_id])
    fresh = await client.get(f"/students/{school.student_id}/dashboard", headers=headers)

    assert pending.status_code == 200
    assert pending.json() == {
        "student_id": str(school.student_id),
        "status": "pending",
        "refreshed_at": None,
        "summary": None,
        "detail": "Le tableau de bord de cet élève est en cours de préparation. Réessayez dans quelques secondes.",
    }
    assert pending_en.json()["detail"] == "This student's dashboard is being prepared. Try again in a few seconds."
    assert fresh.status_code == 200
    body = fresh.json()
    assert body["status"] == "fresh"
    assert body["refreshed_at"] is not None
    assert body["detail"] is None
    assert body["summary"] == {
        "open_tasks": 1,
        "overdue_tasks": 1,
        "tasks_completed_7d": 0,
        "completion_rate_30d": 0.0,
        "average_score_30d": None,
        "last_evaluation_at": None,
        "sessions_30d": 0,
        "session_minutes_30d": 0,
        "next_session_at": None,
    }


async def test_dashboard_refreshing_after_newer_write(client, settings, session_factory, school):
    headers = auth_headers(settings, school.parent)
    await create_task(client, settings, school.coach, school.student_id, due_at=in_days(2))
    async with session_factory() as session, session.begin():
        await refresh_summaries(session, [school.student_id])

    await create_task(client, settings, school.coach, school.student_id, due_at=in_days(3))
    behind = await client.get(f"/students/{school.student_id}/dashboard", headers=headers)
    async with session_factory() as session, session.begin():
        await refresh_summaries(session, [school.student_id])
    caught_up = await client.get(f"/students/{school.student_id}/dashboard", headers=headers)

    assert behind.json()["status"] == "refreshing"
    assert behind.json()["summary"]["open_tasks"] == 1
    assert "pas encore prise en compte" in behind.json()["detail"]
    assert caught_up.json()["status"] == "fresh"
    assert caught_up.json()["summary"]["open_tasks"] == 2


# Health


async def test_health_live_and_ready(client):
    live = await client.get("/health/live")
    ready = await client.get("/health/ready")

    assert (live.status_code, live.json()) == (200, {"status": "live"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_ready_503_without_database(settings):
    # Port 9 (discard) on the loopback interface has no PostgreSQL, so connecting fails at once.
    unreachable = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:9/none")
    app = create_app(settings, engine=unreachable)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
            response = await client.get("/health/ready")
    finally:
        await unreachable.dispose()

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == "5"
    assert response.json()["detail"].startswith("La base de données ne répond pas.")
