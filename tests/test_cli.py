"""The `dashboard-jobs` command run as a real process, as an operator would run it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from sqlalchemy import text

from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.db import asyncpg_dsn
from dashboard_jobs.outbox.writer import add_event
from tests.helpers import insert_students, scalar


def run_cli(settings, *arguments: str, timeout: float = 120, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "BROKER_PREFIX": settings.broker_prefix,
        "APP_ENV": "development",
        "LOG_LEVEL": "INFO",
        "LANG": "C.UTF-8",
        **environment,
    }
    return subprocess.run(
        [sys.executable, "-m", "dashboard_jobs.cli", *arguments],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


async def test_relay_once_then_worker_once_refresh_the_backlog(settings, session_factory, clean_db, topology):
    students = await insert_students(session_factory, 3)
    async with session_factory() as session, session.begin():
        for student in students:
            await add_event(
                session,
                DashboardSummaryRefreshRequestedV1(student_ids=[student], reason="test", requested_at=datetime.now(UTC)),
                aggregate_type="student", aggregate_id=str(student),
            )

    relay = run_cli(settings, "relay", "--once")
    assert relay.returncode == 0, relay.stderr
    assert relay.stdout == "3 message(s) publié(s)\n"

    worker = run_cli(settings, "worker", "--once")
    assert worker.returncode == 0, worker.stderr
    assert "worker stopped" in worker.stderr

    assert await scalar(session_factory, "SELECT count(*) FROM dashboard_summary") == 3
    assert await scalar(session_factory, "SELECT count(*) FROM inbox") == 3


@pytest.mark.parametrize(
    ("options", "environment", "expected"),
    [
        ([], {}, "0 message(s) publié(s)\n"),
        (["--lang", "en"], {}, "0 messages published\n"),
        ([], {"LANG": "en_GB.UTF-8"}, "0 messages published\n"),
        (["--lang", "fr"], {"LANG": "en_GB.UTF-8"}, "0 message(s) publié(s)\n"),
    ],
)
async def test_relay_once_summary_language(settings, clean_db, topology, options, environment, expected):
    result = run_cli(settings, "relay", "--once", *options, **environment)

    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


# Cron expressions and a grace period that give every scheduler --once outcome whatever
# the date: the latest 1 January at midnight is at most 366 days old, and with no grace at
# all a fire is always missed.
YEARLY_WITHIN_GRACE = {
    "REPORT_SCHEDULE_CRON": "0 0 1 1 *",
    "SUMMARY_REBUILD_CRON": "0 0 1 1 *",
    "REPORT_SCHEDULE_GRACE": "P367D",
}
YEARLY_MISSED = {
    "REPORT_SCHEDULE_CRON": "0 0 2 1 *",
    "SUMMARY_REBUILD_CRON": "0 0 2 1 *",
    "REPORT_SCHEDULE_GRACE": "PT0S",
}


def latest_new_year(day: int) -> str:
    today = datetime.now(ZoneInfo("Europe/Paris"))
    year = today.year if (today.month, today.day) >= (1, day) else today.year - 1
    return f"{year}-01-{day:02d} 00:00 (Europe/Paris)"


async def test_scheduler_once_fires_then_reports_fire_handled(settings, clean_db):
    first = run_cli(settings, "scheduler", "--once", **YEARLY_WITHIN_GRACE)
    second = run_cli(settings, "scheduler", "--once", **YEARLY_WITHIN_GRACE)

    fire_at = latest_new_year(1)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"Rapports aux parents : échéance du {fire_at} exécutée.",
        f"Reconstruction des résumés : échéance du {fire_at} exécutée.",
    ]
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        f"Rapports aux parents : échéance du {fire_at} déjà traitée par un autre planificateur "
        "ou une exécution précédente.",
        f"Reconstruction des résumés : échéance du {fire_at} déjà traitée par un autre planificateur "
        "ou une exécution précédente.",
    ]


async def test_scheduler_once_reports_missed_fire_in_english(settings, clean_db):
    result = run_cli(settings, "scheduler", "--once", "--lang", "en", **YEARLY_MISSED)

    fire_at = latest_new_year(2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Parent reports: fire of {fire_at} skipped, because it was missed by more than the grace period (0 s).",
        f"Summary rebuild: fire of {fire_at} skipped, because it was missed by more than the grace period (0 s).",
    ]


async def test_refresh_summary_all_and_selected(settings, session_factory, clean_db):
    students = await insert_students(session_factory, 4)

    everyone = run_cli(settings, "refresh-summary", "--concurrently")
    selected = run_cli(settings, "refresh-summary", "--student-id", str(students[0]))

    assert everyone.returncode == 0, everyone.stderr
    assert "4 résumé(s) recalculé(s)" in everyone.stdout
    assert selected.returncode == 0, selected.stderr
    assert "1 résumé(s) recalculé(s)" in selected.stdout
    assert await scalar(session_factory, "SELECT count(*) FROM dashboard_summary") == 4


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["refresh-summary", "--student-id", "not-a-uuid"], "'not-a-uuid' is not a UUID"),
        (["token", "--account-id", str(uuid.uuid4()), "--role", "teacher"], "'teacher' is not a role"),
        (["relay", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_invalid_arguments_exit_with_usage_error(settings, arguments, expected):
    result = run_cli(settings, *arguments)

    assert result.returncode == 2
    assert expected in result.stderr


def test_invalid_log_level_is_reported(settings):
    result = run_cli(settings, "refresh-summary", LOG_LEVEL="LOUD")

    assert result.returncode == 2
    assert "LOG_LEVEL 'LOUD' is not a logging level" in result.stderr


def test_process_without_database_url_says_what_to_set(settings):
    result = run_cli(settings, "relay", "--once", DATABASE_URL="")

    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr


def test_demo_fails_clearly_without_broker(settings):
    result = run_cli(settings, "demo", "--students", "25", RABBITMQ_URL="amqp://guest:guest@127.0.0.1:1/")

    assert result.returncode == 1
    assert "RabbitMQ is not reachable at amqp://guest:***@127.0.0.1:1/" in result.stderr
    assert "rabbitmq-server -detached" in result.stderr


@pytest.mark.slow
async def test_demo_runs_end_to_end(settings, servers, run_id):
    admin_url, _ = servers
    name = f"dashboard_jobs_test_{run_id}_demo"
    try:
        result = run_cli(
            settings, "demo", "--students", "60", "--rate", "20", "--duration", "3",
            "--database-name", name, "--lang", "en",
            DATABASE_URL=admin_url, timeout=300,
        )
    finally:
        connection = await asyncpg.connect(asyncpg_dsn(admin_url))
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: nothing lost, nothing done twice, every summary correct." in result.stdout
    assert "Dead-lettered messages" in result.stdout
    assert "60 / 60" in result.stdout
