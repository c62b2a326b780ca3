"""The report routes: bulk requests per role, gateway headers, batch reads, JSON and HTML reports."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from dashboard_jobs.api.app import create_app
from dashboard_jobs.api.routes.reports import prefers_html
from dashboard_jobs.consumers.app import build_worker
from dashboard_jobs.db import asyncpg_dsn
from dashboard_jobs.domain.periods import Period
from dashboard_jobs.domain.reports import produce_reports
from dashboard_jobs.outbox.publisher import ConfirmingPublisher
from dashboard_jobs.outbox.relay import Relay
from tests.factories import auth_headers
from tests.helpers import scalar
from tests.report_data import INVALID_PERIODS, build_report_school, utc

BULK = "/agents/reporter/bulk"
REQUESTS = "SELECT count(*) FROM outbox WHERE type = 'PARENT_REPORT_REQUESTED'"


@pytest.fixture
async def data(session_factory, clean_db):
    return await build_report_school(session_factory)


@pytest.fixture
async def client(settings, engine):
    app = create_app(settings, engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        yield client


@pytest.fixture
async def gateway_client(settings, engine):
    trusting = settings.model_copy(update={"trust_gateway_identity_headers": True})
    app = create_app(trusting, engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        yield client


async def generate_january(session_factory, student_ids) -> None:
    async with session_factory() as session, session.begin():
        await produce_reports(
            session, student_ids, Period(2025, 1), regenerate=False,
            now=utc("2025-03-01T09:00Z"), timezone="Europe/Paris", locale="fr",
        )


async def test_admin_without_ids_requests_every_student(client, settings, session_factory, data):
    response = await client.post(BULK, json={"period": "2025-01"}, headers=auth_headers(settings, data.school.admin))

    assert response.status_code == 200
    body = response.json()
    assert sorted(body["pending"]) == sorted([str(data.lea), str(data.hugo)])
    assert body["reports"] == []
    assert await scalar(session_factory, REQUESTS) == 2


async def test_stored_reports_answer_at_once(client, settings, session_factory, data):
    await generate_january(session_factory, [data.lea])

    response = await client.post(
        BULK, json={"student_ids": [str(data.lea)], "period": "2025-01"}, headers=auth_headers(settings, data.school.coach)
    )

    body = response.json()
    assert response.status_code == 200
    assert body["pending"] == []
    [report] = body["reports"]
    assert report["student_id"] == str(data.lea)
    assert report["cached"] is True
    assert report["kpis"]["progress"]["average"] == 14.5
    assert "14,5/20" in report["summary_md"]
    assert await scalar(session_factory, REQUESTS) == 0


async def test_regenerate_requests_even_stored_reports(client, settings, session_factory, data):
    await generate_january(session_factory, [data.lea])

    response = await client.post(
        BULK,
        json={"student_ids": [str(data.lea)], "period": "2025-01", "regenerate": True},
        headers=auth_headers(settings, data.school.coach),
    )

    assert response.json()["pending"] == [str(data.lea)]
    assert await scalar(session_factory, REQUESTS) == 1


async def test_coach_with_foreign_student_is_forbidden(client, settings, session_factory, data):
    response = await client.post(
        BULK,
        json={"student_ids": [str(data.lea), str(data.hugo)], "period": "2025-01"},
        headers=auth_headers(settings, data.school.coach),
    )

    assert response.status_code == 403
    assert str(data.hugo) not in response.text
    assert str(data.lea) not in response.text
    assert await scalar(session_factory, REQUESTS) == 0


async def test_coach_with_unknown_student_gets_same_answer(client, settings, session_factory, data):
    foreign = await client.post(
        BULK, json={"student_ids": [str(data.hugo)], "period": "2025-01"}, headers=auth_headers(settings, data.school.coach)
    )
    unknown = await client.post(
        BULK, json={"student_ids": [str(uuid.uuid4())], "period": "2025-01"}, headers=auth_headers(settings, data.school.coach)
    )

    assert foreign.status_code == unknown.status_code == 403
    assert foreign.json()["detail"] == unknown.json()["detail"]


async def test_coach_without_ids_is_forbidden(client, settings, data):
    response = await client.post(BULK, json={"period": "2025-01"}, headers=auth_headers(settings, data.school.coach))

    assert response.status_code == 403
    assert "student_ids" in response.json()["detail"]


async def test_parent_requests_own_child(client, settings, session_factory, data):
    response = await client.post(
        BULK, json={"student_ids": [str(data.lea)], "period": "2025-01"}, headers=auth_headers(settings, data.school.parent)
    )

    assert response.status_code == 200
    assert response.json()["pending"] == [str(data.lea)]


async def test_parent_with_other_child_is_forbidden(client, settings, data):
    response = await client.post(
        BULK, json={"student_ids": [str(data.hugo)], "period": "2025-01"}, headers=auth_headers(settings, data.school.parent)
    )

    assert response.status_code == 403


async def test_role_header_ignored_without_gateway_setting(client, settings, session_factory, data):
    without_token = await client.post(
        BULK, json={"period": "2025-01"}, headers={"X-Role": "admin", "X-User-Id": str(data.school.admin.account_id)}
    )
    coach_claiming_admin = await client.post(
        BULK, json={"period": "2025-01"}, headers=auth_headers(settings, data.school.coach, **{"X-Role": "admin"})
    )

    assert without_token.status_code == 401
    assert coach_claiming_admin.status_code == 403
    assert await scalar(session_factory, REQUESTS) == 0


async def test_role_header_honoured_behind_gateway(gateway_client, session_factory, data):
    admin = {"X-Role": "admin", "X-User-Id": str(data.school.admin.account_id)}
    response = await gateway_client.post(BULK, json={"period": "2025-01"}, headers=admin)
    impostor = await gateway_client.post(
        BULK, json={"period": "2025-01"}, headers={"X-Role": "admin", "X-User-Id": str(data.school.coach.account_id)}
    )

    assert response.status_code == 200
    assert len(response.json()["pending"]) == 2
    assert impostor.status_code == 401


@pytest.mark.parametrize("period", [*INVALID_PERIODS, "2999-01", "0000-01", "1999-12"])
async def test_invalid_period_is_rejected(client, settings, session_factory, data, period):
    response = await client.post(BULK, json={"period": period}, headers=auth_headers(settings, data.school.admin))

    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"][0]["field"] == "period"
    assert problem["errors"][0]["value"] == period
    assert json.dumps(period, ensure_ascii=False) in problem["detail"]
    assert await scalar(session_factory, REQUESTS) == 0


async def test_invalid_period_in_english(client, settings, data):
    response = await client.post(
        BULK, json={"period": "2025-13"}, headers=auth_headers(settings, data.school.admin, **{"Accept-Language": "en"})
    )

    assert response.status_code == 422
    assert "Expected the form YYYY-MM" in response.json()["detail"]


async def test_too_many_students_is_rejected(client, settings, engine, data):
    limited = create_app(settings.model_copy(update={"bulk_report_max_students": 1}), engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://api.test") as small:
        response = await small.post(
            BULK,
            json={"student_ids": [str(data.lea), str(data.hugo)], "period": "2025-01"},
            headers=auth_headers(settings, data.school.admin),
        )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "student_ids"


async def test_batch_readable_by_requester_and_admin_only(client, settings, data):
    posted = await client.post(
        BULK, json={"student_ids": [str(data.lea)], "period": "2025-01"}, headers=auth_headers(settings, data.school.coach)
    )
    batch_url = f"{BULK}/{posted.json()['batch_id']}"

    own = await client.get(batch_url, headers=auth_headers(settings, data.school.coach))
    admin = await client.get(batch_url, headers=auth_headers(settings, data.school.admin))
    other = await client.get(batch_url, headers=auth_headers(settings, data.school.other_coach))
    parent = await client.get(batch_url, headers=auth_headers(settings, data.school.parent))

    assert own.status_code == admin.status_code == 200
    assert own.json()["pending"] == [str(data.lea)]
    assert other.status_code == parent.status_code == 403


async def test_unknown_batch_is_not_found_for_admin(client, settings, data):
    response = await client.get(f"{BULK}/{uuid.uuid4()}", headers=auth_headers(settings, data.school.admin))

    assert response.status_code == 404


async def test_wait_is_bounded(client, settings, data):
    response = await client.post(
        f"{BULK}?wait=31", json={"period": "2025-01"}, headers=auth_headers(settings, data.school.admin)
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "wait"


async def test_report_as_json(client, settings, session_factory, data):
    await generate_january(session_factory, [data.lea])

    response = await client.get(f"/students/{data.lea}/reports/2025-01", headers=auth_headers(settings, data.school.parent))

    assert response.status_code == 200
    assert response.headers["vary"] == "Accept"
    body = response.json()
    assert body["kpis"]["tasks"]["on_time_rate"] == 0.25
    assert body["period"] == "2025-01"


async def test_report_as_french_html_page(client, settings, session_factory, data):
    await generate_january(session_factory, [data.lea])

    response = await client.get(
        f"/students/{data.lea}/reports/2025-01",
        headers=auth_headers(settings, data.school.parent, Accept="text/html,application/xhtml+xml,*/*;q=0.8"),
    )

    page = response.text
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<html lang="fr">' in page
    assert "Rapport mensuel de Léa, janvier 2025" in page
    assert "Moyenne : 14,5/20 (3 évaluations)" in page
    assert "Rendues à temps : 25 %" in page
    assert "3 séances effectuées (195 min)" in page
    assert "<svg" in page
    assert ">Mathématiques</text>" in page
    assert ">15,0/20</text>" in page
    assert ">13,5/20</text>" in page


async def test_report_as_english_html_page(client, settings, session_factory, data):
    await generate_january(session_factory, [data.lea])

    response = await client.get(
        f"/students/{data.lea}/reports/2025-01",
        headers=auth_headers(settings, data.school.parent, Accept="text/html", **{"Accept-Language": "en-GB,en;q=0.9"}),
    )

    assert '<html lang="en">' in response.text
    assert "Monthly report for Léa, January 2025" in response.text
    assert ">15.0/20</text>" in response.text


async def test_report_of_other_child_is_forbidden(client, settings, session_factory, data):
    await generate_january(session_factory, [data.hugo])

    response = await client.get(f"/students/{data.hugo}/reports/2025-01", headers=auth_headers(settings, data.school.parent))

    assert response.status_code == 403


async def test_missing_report_is_not_found(client, settings, data):
    response = await client.get(f"/students/{data.lea}/reports/2025-01", headers=auth_headers(settings, data.school.parent))

    assert response.status_code == 404


async def test_report_with_invalid_period_is_rejected(client, settings, data):
    response = await client.get(f"/students/{data.lea}/reports/2025-13", headers=auth_headers(settings, data.school.parent))

    assert response.status_code == 422


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("text/html", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("application/json, text/html;q=0.5", False),
    ],
)
def test_html_chosen_by_accept_header(accept, expected):
    assert prefers_html(accept) is expected


async def test_bulk_wait_returns_generated_reports(client, settings, session_factory, data, topology):
    worker = build_worker(settings, session_factory)
    publisher = ConfirmingPublisher(settings.rabbitmq_url, topology, timeout_seconds=10)
    relay = Relay(session_factory, publisher, batch_size=50, interval_seconds=0.5, listen_dsn=asyncpg_dsn(settings.database_url))
    await worker.broker.start()
    await publisher.connect()
    relay_task = asyncio.create_task(relay.run())
    try:
        response = await client.post(
            f"{BULK}?wait=20",
            json={"student_ids": [str(data.lea), str(data.hugo)], "period": "2025-01", "regenerate": True},
            headers=auth_headers(settings, data.school.admin),
        )
    finally:
        relay.stop()
        await relay_task
        await publisher.close()
        await worker.broker.stop()

    body = response.json()
    assert response.status_code == 200
    assert body["pending"] == []
    reports = {report["student_id"]: report for report in body["reports"]}
    assert set(reports) == {str(data.lea), str(data.hugo)}
    assert reports[str(data.lea)]["cached"] is False
    assert reports[str(data.lea)]["kpis"]["sessions"]["minutes"] == 195
    assert "Aucune activité" in reports[str(data.hugo)]["summary_md"]
