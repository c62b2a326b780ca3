"""The parent-report command: flags of the former worker, output per student, exit codes, broker mode."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
from typer.testing import CliRunner

from dashboard_jobs import cli
from dashboard_jobs.commands.reports import run_parent_report
from dashboard_jobs.consumers.app import build_worker
from dashboard_jobs.db import asyncpg_dsn
from dashboard_jobs.domain.periods import Period, previous_period, utc_now
from dashboard_jobs.outbox.publisher import ConfirmingPublisher
from dashboard_jobs.outbox.relay import Relay
from tests.report_data import INVALID_PERIODS, build_report_school

REPORT_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
async def data(session_factory, clean_db):
    return await build_report_school(session_factory)


@pytest.fixture
def run(settings, monkeypatch):
    """Invoke the command with the test run's database, without reconfiguring logging."""
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    environment = {
        "DATABASE_URL": settings.database_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "BROKER_PREFIX": settings.broker_prefix,
        "APP_ENV": "development",
        "LANG": "fr_FR.UTF-8",
    }

    def invoke(*args: str, **extra_env: str):
        return CliRunner().invoke(cli.app, ["parent-report", *args], env={**environment, **extra_env})

    return invoke


def test_generates_then_reuses_cached(run, data):
    ids = ["--student-id", str(data.lea), "--student-id", str(data.hugo)]

    first = run(*ids, "--period", "2025-01")
    second = run(*ids, "--period", "2025-01")

    assert first.exit_code == 0, first.output
    assert re.search(rf"élève {data.lea}  période 2025-01  statut généré  rapport {REPORT_ID}", first.output)
    assert "Total : 2 rapports (2 générés)" in first.output
    assert second.exit_code == 0, second.output
    assert f"élève {data.hugo}  période 2025-01  statut en cache" in second.output
    assert "Total : 2 rapports (2 en cache)" in second.output


def test_regenerate_flag_regenerates(run, data):
    run("--student-id", str(data.lea), "--period", "2025-01")

    result = run("--student-id", str(data.lea), "--period", "2025-01", "--regenerate")

    assert result.exit_code == 0, result.output
    assert "statut généré" in result.output


def test_without_ids_covers_every_student(run, data):
    result = run("--period", "2025-01")

    assert result.exit_code == 0, result.output
    assert str(data.lea) in result.output
    assert str(data.hugo) in result.output


def test_without_period_uses_previous_month(run, data):
    expected = str(previous_period(utc_now(), "Europe/Paris"))

    result = run("--student-id", str(data.lea))

    assert result.exit_code == 0, result.output
    assert f"période {expected}" in result.output


def test_unknown_student_fails_with_exit_code(run, data):
    unknown = uuid.uuid4()

    result = run("--student-id", str(data.lea), "--student-id", str(unknown), "--period", "2025-01")

    assert result.exit_code == 1
    assert f"élève {unknown}  période 2025-01  statut échec (élève introuvable)  rapport -" in result.output
    assert "Total : 2 rapports (1 généré, 1 en échec)" in result.output


def test_english_output(run, data):
    by_option = run("--student-id", str(data.lea), "--period", "2025-01", "--lang", "en")
    by_environment = run("--student-id", str(data.lea), "--period", "2025-01", LANG="en_GB.UTF-8")

    assert f"student {data.lea}  period 2025-01  status generated" in by_option.output
    assert "Total: 1 report (1 generated)" in by_option.output
    assert f"student {data.lea}  period 2025-01  status cached" in by_environment.output


@pytest.mark.parametrize("period", [*INVALID_PERIODS, "2999-01"])
def test_invalid_period_is_usage_error(run, data, period):
    result = run("--student-id", str(data.lea), "--period", period)

    assert result.exit_code == 2
    assert repr(period) in result.output


def test_invalid_student_id_is_usage_error(run, data):
    result = run("--student-id", "not-a-uuid", "--period", "2025-01")

    assert result.exit_code == 2
    assert "'not-a-uuid'" in result.output


async def test_via_broker_waits_for_results(settings, session_factory, data, topology):
    worker = build_worker(settings, session_factory)
    publisher = ConfirmingPublisher(settings.rabbitmq_url, topology, timeout_seconds=10)
    relay = Relay(session_factory, publisher, batch_size=50, interval_seconds=0.5, listen_dsn=asyncpg_dsn(settings.database_url))
    await worker.broker.start()
    await publisher.connect()
    relay_task = asyncio.create_task(relay.run())
    try:
        lines = await run_parent_report(
            settings, [data.lea, data.hugo], Period(2025, 1), False, via_broker=True, wait_seconds=20
        )
    finally:
        relay.stop()
        await relay_task
        await publisher.close()
        await worker.broker.stop()

    assert {line.student_id: line.status for line in lines} == {data.lea: "generated", data.hugo: "generated"}
    assert all(line.report_id is not None for line in lines)


async def test_via_broker_reports_pending_after_deadline(settings, session_factory, data, topology):
    lines = await run_parent_report(settings, [data.lea], Period(2025, 1), False, via_broker=True, wait_seconds=0.2)

    assert [(line.student_id, line.status) for line in lines] == [(data.lea, "pending")]
