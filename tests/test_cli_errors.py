"""What an operator sees when a command cannot start: one line naming the value and the fix.

Start-up failures exit with 1 and invalid settings with 2, without a traceback, and no
message shows JWT_SECRET or the password of a URL.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from dashboard_jobs.db import asyncpg_dsn
from tests.cli_process import cli_environment

UNREACHABLE_BROKER = "amqp://guest:s3cret@127.0.0.1:1/"
UNREACHABLE_DATABASE = "postgresql://postgres:s3cret@127.0.0.1:1/dashboard"


def run_command(settings, *arguments: str, unset: tuple[str, ...] = (), **environment: str) -> subprocess.CompletedProcess[str]:
    """Run one command with the test run's servers, ``environment`` on top and ``unset`` removed."""
    env = cli_environment(settings, LANG="C.UTF-8", **environment)
    for name in unset:
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "dashboard_jobs.cli", *arguments],
        env=env, capture_output=True, text=True, timeout=120,
    )


def last_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def any_account() -> str:
    return str(uuid.uuid4())


def test_token_without_secret_outside_development(settings):
    result = run_command(settings, "token", "--account-id", any_account(), "--role", "admin",
                         APP_ENV="production", unset=("JWT_SECRET",))

    assert result.returncode == 1
    assert last_error_line(result) == (
        "JWT_SECRET is not set. Set JWT_SECRET to a random string of at least 32 characters, "
        "or APP_ENV=development to use the development key."
    )
    assert result.stdout == ""


def test_token_help_names_what_signing_needs(settings):
    result = run_command(settings, "token", "--help")

    help_text = " ".join(result.stdout.split())
    assert result.returncode == 0
    assert "JWT_SECRET" in help_text
    assert "APP_ENV=development" in help_text


def test_token_rejects_invalid_account_id(settings):
    result = run_command(settings, "token", "--account-id", "nope", "--role", "admin")

    assert result.returncode == 2
    assert "Invalid value for --account-id: 'nope' is not a UUID" in result.stderr
    assert "--student-id" not in result.stderr


def test_api_without_database_url(settings):
    result = run_command(settings, "api", "--port", "1", unset=("DATABASE_URL",))

    assert result.returncode == 1
    assert last_error_line(result).startswith("DATABASE_URL is not set; set it to the PostgreSQL database")


def test_api_without_secret_in_production(settings):
    result = run_command(settings, "api", "--port", "1", APP_ENV="production", unset=("JWT_SECRET",))

    assert result.returncode == 1
    assert last_error_line(result).startswith("JWT_SECRET is not set.")


def test_database_that_does_not_exist(settings):
    missing = f"dashboard_jobs_missing_{uuid.uuid4().hex[:8]}"
    url = make_url(settings.database_url).set(database=missing)

    result = run_command(settings, "refresh-summary", DATABASE_URL=url.render_as_string(hide_password=False))

    line = last_error_line(result)
    assert result.returncode == 1
    assert line.startswith(
        f"Database '{missing}' does not exist on the PostgreSQL server at {url.render_as_string(hide_password=True)}."
    )
    assert f"Create it with `createdb -h {url.host or url.query['host']} " in line
    assert f"{missing}` and run `dashboard-jobs migrate`" in line
    if url.password:
        assert url.password not in result.stderr


def test_database_connection_refused(settings):
    result = run_command(settings, "refresh-summary", DATABASE_URL=UNREACHABLE_DATABASE)

    line = last_error_line(result)
    assert result.returncode == 1
    assert line.startswith("PostgreSQL is not reachable at postgresql://postgres:***@127.0.0.1:1/dashboard (")
    assert "ConnectionRefusedError" in line
    assert "or set DATABASE_URL to a running server." in line
    assert "s3cret" not in result.stderr


async def test_database_without_migrations(settings, servers):
    admin_url, _ = servers
    name = f"dashboard_jobs_unmigrated_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(admin_url).set(database=name)
        result = run_command(settings, "refresh-summary", DATABASE_URL=url.render_as_string(hide_password=False))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    line = last_error_line(result)
    assert result.returncode == 1
    assert line.startswith(f"The database at {url.render_as_string(hide_password=True)} is missing its tables")
    assert line.endswith("Run `dashboard-jobs migrate`, then run this command again.")


def test_migrate_to_unknown_revision(settings):
    result = run_command(settings, "migrate", "9999")

    assert result.returncode == 1
    assert last_error_line(result) == (
        "Migration failed: Can't locate revision identified by '9999'. "
        "Pass `head` or a revision id from migrations/versions/."
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DATABASE_URL", "mysql://app:s3cret@db.example/app",
         "Invalid setting DATABASE_URL='mysql://app:***@db.example/app': not a PostgreSQL URL; "
         "use postgresql://user@host:5432/dbname"),
        ("DATABASE_URL", "garbage",
         "Invalid setting DATABASE_URL='garbage': not a URL; use postgresql://user@host:5432/dbname"),
        ("RABBITMQ_URL", "garbage",
         "Invalid setting RABBITMQ_URL='garbage': not a RabbitMQ URL; use amqp://user:password@host:5672/ "
         "(scheme amqp or amqps, and a host)"),
        ("RABBITMQ_URL", "http://guest:s3cret@127.0.0.1:5672/",
         "Invalid setting RABBITMQ_URL='http://guest:***@127.0.0.1:5672/': not a RabbitMQ URL; "
         "use amqp://user:password@host:5672/ (scheme amqp or amqps, and a host)"),
        ("TIMEZONE", "Mars/Olympus",
         "Invalid setting TIMEZONE='Mars/Olympus': no such time zone; use an IANA name such as Europe/Paris"),
        ("REPORT_SCHEDULE_TIMEZONE", "../../etc/passwd",
         "Invalid setting REPORT_SCHEDULE_TIMEZONE='../../etc/passwd': no such time zone; "
         "use an IANA name such as Europe/Paris"),
        ("SUMMARY_REBUILD_CRON", "every night",
         "Invalid setting SUMMARY_REBUILD_CRON='every night': invalid cron expression; use five fields "
         "such as '0 6 * * 1' (minute hour day month weekday)"),
        ("REPORT_SCHEDULE_CRON", "0 25 * * 1",
         "Invalid setting REPORT_SCHEDULE_CRON='0 25 * * 1': invalid cron expression; use five fields "
         "such as '0 6 * * 1' (minute hour day month weekday)"),
        ("RELAY_BATCH_SIZE", "abc",
         "Invalid setting RELAY_BATCH_SIZE='abc': Input should be a valid integer, "
         "unable to parse string as an integer"),
        ("CONSUMER_RETRY_DELAYS_SECONDS", "[1, -5]",
         "Invalid setting CONSUMER_RETRY_DELAYS_SECONDS[1]=-5: Input should be greater than 0"),
        ("CONSUMER_RETRY_DELAYS_SECONDS", "1, 10",
         "Invalid setting CONSUMER_RETRY_DELAYS_SECONDS: it is not valid JSON; list settings are "
         "written in JSON, for example '[1, 10, 60]'"),
    ],
)
def test_invalid_setting_stops_at_start(settings, variable, value, expected):
    result = run_command(settings, "relay", "--once", **{variable: value})

    assert result.returncode == 2
    assert last_error_line(result) == expected
    assert "errors.pydantic.dev" not in result.stderr
    assert "s3cret" not in result.stderr


def test_each_invalid_setting_on_its_own_line(settings):
    result = run_command(settings, "scheduler", "--once", TIMEZONE="Mars/Olympus", SUMMARY_PREFETCH="0")

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert lines == [
        "Invalid setting SUMMARY_PREFETCH='0': Input should be greater than or equal to 1",
        "Invalid setting TIMEZONE='Mars/Olympus': no such time zone; use an IANA name such as Europe/Paris",
    ]


def test_short_secret_rejected_outside_development(settings):
    secret = "too-short-secret-1234"

    result = run_command(settings, "token", "--account-id", any_account(), "--role", "admin",
                         APP_ENV="production", JWT_SECRET=secret)

    line = last_error_line(result)
    assert result.returncode == 2
    assert line.startswith("Invalid setting JWT_SECRET: shorter than 32 characters;")
    assert "at least 32 characters" in line
    assert secret not in result.stderr


def test_long_secret_accepted_in_production(settings):
    result = run_command(settings, "token", "--account-id", any_account(), "--role", "admin",
                         APP_ENV="production", JWT_SECRET="x" * 32)

    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2


def test_short_secret_accepted_in_development(settings):
    result = run_command(settings, "token", "--account-id", any_account(), "--role", "admin",
                         APP_ENV="development", JWT_SECRET="short")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [["relay", "--once"], ["worker", "--once"]])
def test_unreachable_broker_after_startup_retries(settings, command):
    result = run_command(settings, *command, RABBITMQ_URL=UNREACHABLE_BROKER, STARTUP_RETRY_SECONDS="2")

    line = last_error_line(result)
    assert result.returncode == 1
    assert line.startswith("RabbitMQ is not reachable at amqp://guest:***@127.0.0.1:1/ after retrying for 2 s (")
    assert "rabbitmq-server -detached" in line
    assert "connecting to RabbitMQ failed, retrying" in result.stderr
    assert "s3cret" not in result.stderr
