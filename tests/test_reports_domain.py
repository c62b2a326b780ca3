"""Report figures and text against hand computations, and the cache rule."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event, func, select

from dashboard_jobs.domain.periods import Period
from dashboard_jobs.domain.report_models import Report
from dashboard_jobs.domain.report_render import format_date, format_number, render_summary_md
from dashboard_jobs.domain.reports import PERIOD_IN_FUTURE, STUDENT_NOT_FOUND, produce_reports
from tests.report_data import add_evaluation, build_report_school, utc

JANUARY = Period(2025, 1)
AFTER_JANUARY = utc("2025-03-01T09:00Z")


@pytest.fixture
async def data(session_factory, clean_db):
    return await build_report_school(session_factory)


async def produce(session_factory, student_ids, period=JANUARY, regenerate=False, now=AFTER_JANUARY, locale="fr"):
    async with session_factory() as session, session.begin():
        return await produce_reports(
            session, student_ids, period, regenerate=regenerate, now=now, timezone="Europe/Paris", locale=locale
        )


async def stored_report(session_factory, student_id, period="2025-01") -> Report:
    async with session_factory() as session:
        return await session.scalar(select(Report).where(Report.student_id == student_id, Report.period == period))


async def test_progress_figures_match_hand_computation(session_factory, data):
    await produce(session_factory, [data.lea])
    progress = (await stored_report(session_factory, data.lea)).kpis_json["progress"]

    assert progress["evaluations"] == 3
    assert progress["average"] == 14.5
    assert progress["previous_average"] == 14.0
    assert progress["change"] == 0.5
    subjects = {item["subject"]: item for item in progress["subjects"]}
    assert subjects["mathematiques"]["average"] == 15.0
    assert subjects["mathematiques"]["change"] == 3.0
    assert subjects["mathematiques"]["evaluations"] == 2
    assert subjects["francais"]["average"] == 13.5
    assert subjects["francais"]["change"] == -2.5


async def test_task_figures_match_hand_computation(session_factory, data):
    await produce(session_factory, [data.lea])
    tasks = (await stored_report(session_factory, data.lea)).kpis_json["tasks"]

    assert tasks == {"assigned": 4, "completed": 2, "completed_on_time": 1, "overdue": 2, "on_time_rate": 0.25}


async def test_session_figures_match_hand_computation(session_factory, data):
    await produce(session_factory, [data.lea])
    sessions = (await stored_report(session_factory, data.lea)).kpis_json["sessions"]

    assert sessions == {"planned": 0, "done": 3, "cancelled": 1, "no_show": 1, "minutes": 195}


async def test_late_january_evaluation_counts_in_february(session_factory, data):
    await produce(session_factory, [data.lea], period=Period(2025, 2))
    progress = (await stored_report(session_factory, data.lea, "2025-02")).kpis_json["progress"]

    assert progress["evaluations"] == 1
    assert progress["average"] == 0.0
    assert progress["previous_average"] == 14.5


async def test_summary_in_french_with_figures(session_factory, data):
    await produce(session_factory, [data.lea])
    summary = (await stored_report(session_factory, data.lea)).summary_md

    assert summary.startswith("# Rapport mensuel de Léa, janvier 2025\n")
    assert "- Moyenne : 14,5/20 (3 évaluations), +0,5 point par rapport à décembre 2024 (14,0/20)" in summary
    assert "- Mathématiques : 15,0/20 (2 évaluations, +3,0)" in summary
    assert "- Français : 13,5/20 (1 évaluation, -2,5)" in summary
    assert "Les résultats progressent." in summary
    assert "- 4 tâches à rendre, 2 terminées, 2 en retard" in summary
    assert "- Rendues à temps : 25 %" in summary
    assert "2 tâches en retard à rattraper." in summary
    assert "- 3 séances effectuées (195 min), 0 prévue, 1 annulée, 1 absence" in summary
    assert "1 séance manquée sans prévenir." in summary
    assert "s'arrête" not in summary


async def test_summary_in_english(session_factory, data):
    await produce(session_factory, [data.lea], locale="en")
    report = await stored_report(session_factory, data.lea)

    assert report.locale == "en"
    assert "- Average: 14.5/20 (3 evaluations), +0.5 points compared with December 2024 (14.0/20)" in report.summary_md
    assert "- Handed in on time: 25%" in report.summary_md


async def test_student_without_activity_says_so(session_factory, data):
    await produce(session_factory, [data.hugo])
    report = await stored_report(session_factory, data.hugo)

    assert report.kpis_json["has_activity"] is False
    assert "Aucune activité enregistrée ce mois-ci" in report.summary_md
    assert "## Progression" not in report.summary_md


async def test_month_to_date_report_says_stop_date(session_factory, data):
    now = utc("2025-01-17T12:00Z")
    await produce(session_factory, [data.lea], now=now)
    report = await stored_report(session_factory, data.lea)

    assert report.payload["window"]["month_to_date"] is True
    assert "ce rapport s'arrête au 17 janvier 2025" in report.summary_md
    # Evaluations and completions count up to the generation time; tasks due later in the
    # month are assigned but neither due yet nor overdue.
    assert report.kpis_json["progress"]["evaluations"] == 2
    assert report.kpis_json["tasks"] == {
        "assigned": 4, "completed": 2, "completed_on_time": 1, "overdue": 0, "on_time_rate": 0.5
    }


async def test_existing_report_is_cached(session_factory, data):
    [first] = await produce(session_factory, [data.lea])
    await add_evaluation(session_factory, data.lea, "mathematiques", "20", "20", "2025-01-05T10:00Z")
    [second] = await produce(session_factory, [data.lea], now=utc("2025-03-02T09:00Z"))

    assert first.status == "generated"
    assert second.status == "cached"
    assert second.report_id == first.report_id
    assert second.generated_at == first.generated_at
    assert (await stored_report(session_factory, data.lea)).kpis_json["progress"]["evaluations"] == 3


async def test_regenerate_recomputes_same_report(session_factory, data):
    [first] = await produce(session_factory, [data.lea])
    await add_evaluation(session_factory, data.lea, "mathematiques", "20", "20", "2025-01-05T10:00Z")
    [second] = await produce(session_factory, [data.lea], regenerate=True, now=utc("2025-03-02T09:00Z"))

    report = await stored_report(session_factory, data.lea)
    assert second.status == "generated"
    assert second.report_id == first.report_id
    assert report.generated_at == utc("2025-03-02T09:00Z")
    assert report.kpis_json["progress"]["evaluations"] == 4


async def test_unknown_student_fails(session_factory, data):
    unknown = uuid.uuid4()
    outcomes = await produce(session_factory, [data.lea, unknown])

    assert [o.status for o in outcomes] == ["generated", "failed"]
    assert outcomes[1].reason == STUDENT_NOT_FOUND
    assert outcomes[1].report_id is None


async def test_future_period_fails_without_report(session_factory, data):
    outcomes = await produce(session_factory, [data.lea], period=Period(2025, 4), now=utc("2025-03-17T12:00Z"))

    assert outcomes[0].status == "failed"
    assert outcomes[0].reason == PERIOD_IN_FUTURE
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Report)) == 0


async def test_statement_count_independent_of_students(session_factory, engine, data):
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        await produce(session_factory, [data.lea, data.hugo], regenerate=True)
        two = len(statements)
        statements.clear()
        await produce(session_factory, [data.lea], regenerate=True)
        one = len(statements)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)

    assert two == one


def test_render_again_from_payload_only():
    payload = {
        "student": {"id": str(uuid.uuid4()), "first_name": "Inès"},
        "period": "2025-03",
        "timezone": "Europe/Paris",
        "window": {"month_to_date": True, "stop_date": "2025-03-01"},
        "kpis": {"has_activity": False},
    }

    assert "ce rapport s'arrête au 1er mars 2025" in render_summary_md(payload, "fr")
    assert "this report stops at 1 March 2025" in render_summary_md(payload, "en")


@pytest.mark.parametrize(
    ("value", "language", "expected"),
    [(14.5, "fr", "14,5"), (14.25, "fr", "14,3"), (14.5, "en", "14.5"), (15, "fr", "15,0")],
)
def test_number_format(value, language, expected):
    assert format_number(value, language) == expected


def test_french_dates():
    assert format_date(utc("2025-01-31T00:00Z").date(), "fr") == "31 janvier 2025"
    assert format_date(utc("2025-08-01T00:00Z").date(), "fr") == "1er août 2025"
    assert format_date(utc("2025-01-31T00:00Z").date(), "en") == "31 January 2025"


def test_french_title_elides_before_a_vowel():
    from dashboard_jobs.domain.report_render import _de

    assert _de("Anna") == "d'Anna"
    assert _de("Éloïse") == "d'Éloïse"
    assert _de("Léa") == "de Léa"
