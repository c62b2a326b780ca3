"""The `dashboard-jobs` command: one sub-command per process and per one-off job."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from dashboard_jobs.commands.dlq import dlq_app
from dashboard_jobs.commands.language import output_language
from dashboard_jobs.commands.outbox import outbox_app
from dashboard_jobs.commands.reports import parent_report, scheduler
from dashboard_jobs.logging_setup import configure_logging
from dashboard_jobs.settings import Settings

log = logging.getLogger("dashboard_jobs.cli")

# Exit code of relay and worker when a queue or exchange exists with other arguments, so a
# supervisor can tell a configuration problem (restarting will not help) from a crash.
TOPOLOGY_MISMATCH_EXIT_CODE = 3

app = typer.Typer(
    help="Event pipeline of the student dashboard: relay, worker, API and one-off jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def load_settings(**overrides: object) -> Settings:
    """Read the settings once and configure logging from LOG_LEVEL; exit with 2 when a setting is invalid."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        from dashboard_jobs.commands.errors import format_settings_errors

        for line in format_settings_errors(error):
            typer.echo(line, err=True)
        raise typer.Exit(2) from None
    except SettingsError as error:
        from dashboard_jobs.commands.errors import format_settings_decode_error

        typer.echo(format_settings_decode_error(error), err=True)
        raise typer.Exit(2) from None
    try:
        configure_logging(settings.log_level)
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    return settings


def parse_uuids(values: list[str] | None, option: str) -> list[uuid.UUID]:
    """Parse the values of ``option``; raise a usage error that names the option and the value."""
    ids = []
    for value in values or []:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            raise typer.BadParameter(
                f"{value!r} is not a UUID; pass an id such as 0b6f2a5e-9d7c-4c1e-8a3b-2f1d4e5c6a7b",
                param_hint=option,
            ) from None
    return ids


@contextmanager
def exit_on_topology_mismatch() -> Iterator[None]:
    """Print a TopologyMismatchError and exit with TOPOLOGY_MISMATCH_EXIT_CODE."""
    from dashboard_jobs.consumers.topology import TopologyMismatchError

    try:
        yield
    except TopologyMismatchError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(TOPOLOGY_MISMATCH_EXIT_CODE) from None


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target Alembic revision.")] = "head") -> None:
    """Apply the database migrations (Alembic) up to REVISION."""
    from dashboard_jobs.db import upgrade_database
    from dashboard_jobs.processes import require_database_url

    settings = load_settings()
    upgrade_database(require_database_url(settings), revision)
    log.info("database migrated", extra={"revision": revision})


@app.command()
def relay(
    interval: Annotated[float | None, typer.Option(help="Poll fallback interval in seconds when no NOTIFY arrives.", min=0.01)] = None,
    once: Annotated[bool, typer.Option("--once", help="Publish the pending backlog, then exit.")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Outbox rows claimed per transaction.", min=1)] = None,
    lang: Annotated[str | None, typer.Option("--lang", help="Language of the --once summary, fr or en. Default: from LANG, else fr.")] = None,
) -> None:
    """Publish outbox rows to RabbitMQ with publisher confirms."""
    from dashboard_jobs.processes import run_relay

    language = output_language(lang)
    settings = load_settings(relay_interval_seconds=interval, relay_batch_size=batch_size)
    with exit_on_topology_mismatch():
        published = asyncio.run(run_relay(settings, once=once))
    if not once:
        return
    if language == "fr":
        typer.echo(f"{published} message(s) publié(s)")
    else:
        typer.echo(f"{published} {'message' if published == 1 else 'messages'} published")


@app.command()
def worker(
    once: Annotated[bool, typer.Option("--once", help="Process what is queued, then exit.")] = False,
) -> None:
    """Run the consumers (FastStream): summary refresh and the others."""
    from dashboard_jobs.processes import run_worker

    settings = load_settings()
    with exit_on_topology_mismatch():
        exit_code = asyncio.run(run_worker(settings, once=once))
    if exit_code:
        raise typer.Exit(exit_code)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.", min=1, max=65535)] = 8000,
) -> None:
    """Serve the HTTP API with uvicorn."""
    from dashboard_jobs.processes import require_database_url, run_api

    settings = load_settings()
    require_database_url(settings)
    settings.require_jwt_secret()
    log.info("api starting", extra={"host": host, "port": port})
    run_api(settings, host, port)
    log.info("api stopped")


@app.command("refresh-summary")
def refresh_summary(
    student_id: Annotated[list[str] | None, typer.Option("--student-id", help="Student UUID; repeat for several. Default: every student.")] = None,
    concurrently: Annotated[bool, typer.Option("--concurrently", help="Accepted for compatibility: the rebuild never blocks readers.")] = False,
    lang: Annotated[str | None, typer.Option("--lang", help="Output language, fr or en. Default: from LANG, else fr.")] = None,
) -> None:
    """Recompute dashboard summaries now, in batches, without blocking readers."""
    from dashboard_jobs.processes import refresh_summary_now

    language = output_language(lang)
    ids = parse_uuids(student_id, "--student-id")
    settings = load_settings()
    count, seconds = asyncio.run(refresh_summary_now(settings, ids))
    if language == "fr":
        typer.echo(f"{count} résumé(s) recalculé(s) en {seconds:.2f} s".replace(".", ","))
    else:
        typer.echo(f"{count} summaries refreshed in {seconds:.2f} s")


@app.command()
def token(
    account_id: Annotated[str, typer.Option(help="Account UUID, the token's subject.")],
    role: Annotated[str, typer.Option(help="admin, coach or parent.")],
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.", min=1)] = 3600,
) -> None:
    """Print a bearer token for an account.

    Signing needs JWT_SECRET (the API's key), or APP_ENV=development for the development key.
    """
    from dashboard_jobs.api.auth import mint_token

    subject = parse_uuids([account_id], "--account-id")[0]
    if role not in {"admin", "coach", "parent"}:
        raise typer.BadParameter(f"{role!r} is not a role; use admin, coach or parent", param_hint="--role")
    settings = load_settings()
    typer.echo(mint_token(settings, subject, role, ttl_seconds=ttl))


@app.command()
def demo(
    students: Annotated[int, typer.Option(help="Number of students in the generated school.", min=25, max=50_000)] = 2000,
    rate: Annotated[float, typer.Option(help="Coach writes per second sent to the API.", min=0.1, max=2000)] = 50.0,
    duration: Annotated[float, typer.Option(help="Length of the live workload, in seconds.", min=1, max=3600)] = 30.0,
    seed: Annotated[int, typer.Option(help="Seed of the generated school and workload.")] = 42,
    database_name: Annotated[str, typer.Option(help="Database the demo creates (or reuses and empties) on the server.")] = "dashboard_demo",
    lang: Annotated[str | None, typer.Option("--lang", help="Language of the report, fr or en. Default: from LANG, else fr.")] = None,
) -> None:
    """Load a realistic school, run api, relay and worker, drive coach writes and print a report."""
    from dashboard_jobs.demo.report import render
    from dashboard_jobs.demo.run import DemoOptions, run_demo
    from dashboard_jobs.runtime import check_broker, database_url_or_embedded

    language = output_language(lang)
    settings = load_settings(app_env=_development_unless_set())
    asyncio.run(check_broker(settings.rabbitmq_url))

    log_dir = Path(settings.embedded_postgres_dir).parent / "demo-logs"
    options = DemoOptions(students=students, rate=rate, duration=duration, seed=seed,
                          database_name=database_name, log_dir=log_dir)
    with database_url_or_embedded(settings.database_url, settings.embedded_postgres_dir) as server_url:
        report = asyncio.run(run_demo(settings, server_url, options))
    typer.echo(render(report, language, str(log_dir)))
    if not report.ok:
        raise typer.Exit(1)


def _development_unless_set() -> str | None:
    # The demo mints its own tokens, so without an explicit APP_ENV it runs in development
    # mode and uses the development signing key.
    return None if "APP_ENV" in os.environ else "development"


app.command("parent-report")(parent_report)
app.command("scheduler")(scheduler)
app.add_typer(outbox_app, name="outbox")
app.add_typer(dlq_app, name="dlq")


def main() -> None:
    """Run the command; print a known start-up failure as one line and exit with 1, without a traceback."""
    try:
        app()
    except Exception as error:
        from dashboard_jobs.commands.errors import describe_startup_error

        message = describe_startup_error(error)
        if message is None:
            raise
        log.debug("command failed at start", exc_info=error)
        typer.echo(message, err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
