"""Fuzzed requests against the API's OpenAPI document: no input may cause a server error.

Schemathesis reads /openapi.json from the application. For every operation it sends
requests that follow the schema and requests that break it: wrong types, missing or extra
members, bodies that are not JSON, missing required headers. They go in-process over ASGI
to an application on the run's real database and broker names. Each request carries the
bearer token of a real admin, coach or parent, chosen per example, unless the case tests a
missing Authorization header. Half of the cases have their ids and periods replaced by ones
that exist: a linked student, their task, their tutoring session, a report batch or a
stored report. The fuzzing then reaches the write services and the access rules instead of
stopping at 403 and 404.
The only check is ``not_a_server_error``: invalid input must be a 4xx problem, never a 5xx.

The schema comes from a fixture and each operation's cases run through Hypothesis
directly (``APIOperation.as_strategy``), because ``schemathesis.pytest.from_fixture``
(Schemathesis 4.32) sets ``Function._nodeid``, which pytest 9.2 no longer has.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from dashboard_jobs.api.app import create_app
from dashboard_jobs.api.routes.reports import MAX_WAIT_SECONDS
from dashboard_jobs.db import normalise_database_url
from dashboard_jobs.domain.access import Principal
from dashboard_jobs.domain.periods import parse_period, previous_period, utc_now
from dashboard_jobs.producers.reports import generate_reports_direct
from dashboard_jobs.settings import Settings
from tests.factories import auth_headers, build_school, client  # noqa: F401

# Requests per operation, valid and invalid mixed, so the whole test stays well under a minute.
MAX_EXAMPLES = 40

# Operations that must be in the document, so a schema that failed to load cannot pass.
EXPECTED_OPERATIONS = {
    "POST /students/{student_id}/tasks",
    "PATCH /tasks/{task_id}",
    "POST /students/{student_id}/evaluations",
    "POST /students/{student_id}/sessions",
    "GET /students/{student_id}/dashboard",
    "POST /agents/reporter/bulk",
    "GET /students/{student_id}/reports/{period}",
}

# A bulk request with ?wait=S waits up to S seconds for reports that no worker generates in
# this test, so a generated wait inside the accepted range is shortened to this.
SHORT_WAIT_SECONDS = 0.05


@dataclass(frozen=True)
class FuzzData:
    """Bearer tokens by role, and values that exist, by path parameter and body member name."""

    tokens: dict[str, str]
    path_values: dict[str, str]
    body_values: dict[str, Any]


@pytest.fixture
async def fuzz_data(settings: Settings, engine, session_factory, clean_db, topology) -> FuzzData:
    """Accounts, links, a task, a tutoring session, a report batch and a report, made through the API.

    ``topology`` declares the run's queues, which the admin dead-letter endpoints read.
    """
    school = await build_school(session_factory)
    student = school.student_id
    coach = auth_headers(settings, school.coach)
    period = str(previous_period(utc_now(), settings.timezone))

    app = create_app(settings, engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        due_at = (datetime.now(UTC) + timedelta(days=3)).isoformat()
        task = await client.post(
            f"/students/{student}/tasks",
            json={"title": "Fiche de révision", "subject": "mathematiques", "due_at": due_at},
            headers=coach,
        )
        tutoring_session = await client.post(
            f"/students/{student}/sessions", json={"starts_at": due_at, "duration_minutes": 60}, headers=coach
        )
        batch = await client.post(
            "/agents/reporter/bulk",
            json={"student_ids": [str(student)], "period": period},
            headers=coach,
        )
    for response in (task, tutoring_session, batch):
        if response.status_code not in {200, 201}:
            raise RuntimeError(f"fuzz data setup failed: {response.status_code} {response.text}")
    await generate_reports_direct(session_factory, [student], parse_period(period), False, settings)

    principals: dict[str, Principal] = {"admin": school.admin, "coach": school.coach, "parent": school.parent}
    return FuzzData(
        tokens={role: auth_headers(settings, principal)["Authorization"] for role, principal in principals.items()},
        path_values={
            "student_id": str(student),
            "task_id": task.json()["id"],
            "session_id": tutoring_session.json()["id"],
            "batch_id": batch.json()["batch_id"],
            "period": period,
        },
        body_values={"student_ids": [str(student)], "period": period, "coach_id": str(school.coach.account_id)},
    )


@pytest.fixture
def api_schema(settings: Settings, fuzz_data: FuzzData) -> schemathesis.BaseSchema:
    # Schemathesis runs the application on an event loop of its own, in another thread. An
    # engine without a pool makes sure no connection outlives the loop that opened it.
    engine = create_async_engine(normalise_database_url(settings.database_url), poolclass=NullPool)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, engine=engine))


def test_api_never_answers_5xx(api_schema: schemathesis.BaseSchema, fuzz_data: FuzzData, subtests):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert EXPECTED_OPERATIONS <= {operation.label for operation in operations}

    for operation in operations:
        with subtests.test(operation=operation.label):
            fuzz_operation(operation, fuzz_data)


def fuzz_operation(operation, fuzz_data: FuzzData) -> None:
    """Send valid and invalid requests to one operation as each role; raise on the first 5xx."""
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )

    @given(case=cases, role=st.sampled_from(sorted(fuzz_data.tokens)), use_known_values=st.booleans())
    # No example database: this inner test has the same key for every operation, so stored
    # examples would be replayed against the wrong one. A failure prints its request instead.
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    def requests_never_fail_on_the_server(case, role: str, use_known_values: bool) -> None:
        if use_known_values:
            replace_with_known_values(case, fuzz_data)
        shorten_wait(case)

        case.call_and_validate(headers={"Authorization": fuzz_data.tokens[role]}, checks=[not_a_server_error])

    requests_never_fail_on_the_server()


def replace_with_known_values(case, fuzz_data: FuzzData) -> None:
    """Replace generated ids and periods by existing ones; members the case omits stay omitted."""
    for name, value in fuzz_data.path_values.items():
        if name in (case.path_parameters or {}):
            case.path_parameters[name] = value
    if isinstance(case.body, dict):
        for name, value in fuzz_data.body_values.items():
            if name in case.body:
                case.body[name] = value


def shorten_wait(case) -> None:
    """Shorten a ``wait`` query parameter that the API accepts, leaving invalid ones as generated."""
    wait = (case.query or {}).get("wait")
    try:
        seconds = float(wait)
    except (TypeError, ValueError):
        return
    if 0 < seconds <= MAX_WAIT_SECONDS:
        case.query["wait"] = SHORT_WAIT_SECONDS


# Server errors the fuzzing found, kept as plain regression tests.


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_title_with_nul_character_is_422(client, settings, fuzz_data: FuzzData, method: str):
    title = "Fiche\x00 de révision"
    if method == "POST":
        url = f"/students/{fuzz_data.path_values['student_id']}/tasks"
        body = {"title": title, "subject": "svt", "due_at": "2031-01-01T00:00:00Z"}
    else:
        url = f"/tasks/{fuzz_data.path_values['task_id']}"
        body = {"title": title}

    response = await client.request(method, url, json=body, headers={"Authorization": fuzz_data.tokens["coach"]})

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["code"]) == ("title", "string_nul_character")
    assert error["message"].startswith("Le texte contient le caractère NUL (U+0000)")
