"""The `parent-report` and `scheduler` commands.

`parent-report` keeps the flags of the former parent report worker: repeatable
``--student-id`` (default every student), ``--period YYYY-MM`` (default the previous month)
and ``--regenerate``. It prints one line per student and a total, in French unless
``--lang en`` is given or LANG starts with "en", and exits with 1 when a report failed or
is still pending, 2 on invalid arguments. `scheduler --once` prints one sentence per
schedule, in the same language: fire run, skipped or already handled.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.commands.language import output_language
from dashboard_jobs.commands.outbox import format_duration
from dashboard_jobs.contracts.reports import RequestedByCommand
from dashboard_jobs.domain.periods import InvalidPeriodError, Period, parse_period, previous_period, utc_now
from dashboard_jobs.settings import Settings

STATUS_LABELS = {
    "fr": {"generated": "généré", "cached": "en cache", "failed": "échec", "pending": "en attente"},
    "en": {"generated": "generated", "cached": "cached", "failed": "failed", "pending": "pending"},
}
# Singular and plural of each status in the total line.
TOTAL_LABELS = {
    "fr": {
        "generated": ("généré", "générés"),
        "cached": ("en cache", "en cache"),
        "failed": ("en échec", "en échec"),
        "pending": ("en attente", "en attente"),
    },
    "en": {
        "generated": ("generated", "generated"),
        "cached": ("cached", "cached"),
        "failed": ("failed", "failed"),
        "pending": ("pending", "pending"),
    },
}
# Requests still pending at the deadline usually mean no relay or no worker is running.
PENDING_HINT = {
    "fr": "Des demandes sont toujours en attente : vérifiez que `dashboard-jobs relay` et "
    "`dashboard-jobs worker` tournent, ou augmentez --wait-seconds.",
    "en": "Some requests are still pending: check that `dashboard-jobs relay` and "
    "`dashboard-jobs worker` are running, or raise --wait-seconds.",
}
REASON_LABELS = {
    "fr": {"student_not_found": "élève introuvable", "period_in_future": "période future"},
    "en": {"student_not_found": "student not found", "period_in_future": "period in the future"},
}
SCHEDULE_LABELS = {
    "fr": {"parent_reports": "Rapports aux parents", "summary_rebuild": "Reconstruction des résumés"},
    "en": {"parent_reports": "Parent reports", "summary_rebuild": "Summary rebuild"},
}
# One sentence per outcome of producers.schedule.run_due_fire: "done" means the fire's row
# already existed, written by another scheduler or by an earlier run of this one.
FIRE_OUTCOMES = {
    "fr": {
        "fired": "{schedule} : échéance du {fire_at} exécutée.",
        "skipped": "{schedule} : échéance du {fire_at} ignorée, car manquée depuis plus longtemps "
        "que le délai de grâce ({grace}).",
        "done": "{schedule} : échéance du {fire_at} déjà traitée par un autre planificateur "
        "ou une exécution précédente.",
    },
    "en": {
        "fired": "{schedule}: fire of {fire_at} run.",
        "skipped": "{schedule}: fire of {fire_at} skipped, because it was missed by more than "
        "the grace period ({grace}).",
        "done": "{schedule}: fire of {fire_at} already handled by another scheduler or an earlier run.",
    },
}


@dataclass(frozen=True)
class ReportLine:
    """One student's result as the command prints it; status "pending" means no outcome before the deadline."""

    student_id: uuid.UUID
    period: str
    status: str
    report_id: uuid.UUID | None
    reason: str | None = None


def parent_report(
    student_id: Annotated[
        list[str] | None,
        typer.Option("--student-id", help="Student UUID; repeat for several. Default: every student."),
    ] = None,
    period: Annotated[
        str | None, typer.Option("--period", help="Month YYYY-MM. Default: the previous month.")
    ] = None,
    regenerate: Annotated[
        bool, typer.Option("--regenerate", help="Regenerate even when a report of the period exists.")
    ] = False,
    via_broker: Annotated[
        bool,
        typer.Option(
            "--via-broker",
            help="Enqueue the requests through the outbox and wait for the worker's results, "
            "instead of generating in this process.",
        ),
    ] = False,
    wait_seconds: Annotated[
        float, typer.Option("--wait-seconds", min=0, help="With --via-broker, how long to wait for results, in seconds.")
    ] = 120.0,
    lang: Annotated[
        str | None, typer.Option("--lang", help="Output language, fr or en. Default: from LANG, else fr.")
    ] = None,
) -> None:
    """Generate the parent reports of one month, or reuse those already generated."""
    language = output_language(lang)
    ids = _parse_student_ids(student_id)
    settings = _load_settings()
    chosen = parse_period_option(period, settings, language)

    lines = asyncio.run(
        run_parent_report(settings, ids or None, chosen, regenerate, via_broker=via_broker, wait_seconds=wait_seconds)
    )
    for line in lines:
        typer.echo(format_line(line, language))
    typer.echo(format_total(lines, language))
    if any(line.status == "pending" for line in lines):
        typer.echo(PENDING_HINT[language], err=True)
    if any(line.status in {"failed", "pending"} for line in lines):
        raise typer.Exit(1)


def scheduler(
    once: Annotated[
        bool, typer.Option("--once", help="Run the fires that are due now (within the grace period), then exit.")
    ] = False,
    lang: Annotated[
        str | None, typer.Option("--lang", help="Language of the --once summary, fr or en. Default: from LANG, else fr.")
    ] = None,
) -> None:
    """Run the weekly parent report schedule and the periodic summary rebuild."""
    language = output_language(lang)
    settings = _load_settings()
    asyncio.run(run_scheduler_process(settings, once=once, language=language))


async def run_parent_report(
    settings: Settings,
    student_ids: Sequence[uuid.UUID] | None,
    period: Period,
    regenerate: bool,
    *,
    via_broker: bool,
    wait_seconds: float,
) -> list[ReportLine]:
    """Generate the reports directly, or through the broker, with the database of ``settings``."""
    from dashboard_jobs.db import create_engine, create_session_factory
    from dashboard_jobs.processes import require_database_url

    engine = create_engine(require_database_url(settings), pool_size=2)
    session_factory = create_session_factory(engine)
    try:
        if via_broker:
            return await _through_broker(session_factory, student_ids, period, regenerate, wait_seconds)
        return await _directly(session_factory, student_ids, period, regenerate, settings)
    finally:
        await engine.dispose()


async def run_scheduler_process(settings: Settings, *, once: bool, language: str = "fr") -> None:
    from dashboard_jobs.db import create_engine, create_session_factory
    from dashboard_jobs.processes import require_database_url, stop_on_signals
    from dashboard_jobs.producers.schedule import latest_fire_time, run_due_fire, run_scheduler, scheduled_jobs

    engine = create_engine(require_database_url(settings), pool_size=2)
    session_factory = create_session_factory(engine)
    try:
        if once:
            now = utc_now()
            for job in scheduled_jobs(settings, session_factory):
                outcome = await run_due_fire(job, session_factory, now, settings.report_schedule_grace)
                # run_due_fire handled the latest fire not after ``now``, the same one as this.
                fire_at = latest_fire_time(job.expression, job.timezone, now)
                typer.echo(format_fire_outcome(job.name, fire_at, job.timezone, outcome, settings, language))
            return
        await run_scheduler(settings, session_factory, stop_on_signals())
    finally:
        await engine.dispose()


async def _directly(
    session_factory: async_sessionmaker[AsyncSession],
    student_ids: Sequence[uuid.UUID] | None,
    period: Period,
    regenerate: bool,
    settings: Settings,
) -> list[ReportLine]:
    from dashboard_jobs.producers.reports import generate_reports_direct

    outcomes = await generate_reports_direct(session_factory, student_ids, period, regenerate, settings)
    return [ReportLine(o.student_id, o.period, o.status, o.report_id, o.reason) for o in outcomes]


async def _through_broker(
    session_factory: async_sessionmaker[AsyncSession],
    student_ids: Sequence[uuid.UUID] | None,
    period: Period,
    regenerate: bool,
    wait_seconds: float,
) -> list[ReportLine]:
    from dashboard_jobs.producers.reports import enqueue_report_requests, wait_for_batch

    requested_by = RequestedByCommand(command="parent-report")
    async with session_factory() as session, session.begin():
        batch_id = await enqueue_report_requests(session, student_ids, period, regenerate, requested_by)
    batch = await wait_for_batch(session_factory, batch_id, wait_seconds)
    if batch is None:
        return []
    return [
        ReportLine(r.student_id, r.period, r.status or "pending", r.report_id, r.reason) for r in batch.requests
    ]


def parse_period_option(value: str | None, settings: Settings, language: str) -> Period:
    """Parse ``--period``, defaulting to the previous month; raise a usage error naming the value."""
    now = utc_now()
    if value is None:
        return previous_period(now, settings.timezone)
    try:
        return parse_period(value, now=now, timezone=settings.timezone)
    except InvalidPeriodError as error:
        raise typer.BadParameter(error.message(language), param_hint="--period") from None


def format_fire_outcome(
    schedule: str, fire_at: datetime, timezone: str, outcome: str, settings: Settings, language: str
) -> str:
    """Format what ``scheduler --once`` did with one schedule's fire, at its local time."""
    local = fire_at.astimezone(ZoneInfo(timezone))
    return FIRE_OUTCOMES[language][outcome].format(
        schedule=SCHEDULE_LABELS[language].get(schedule, schedule),
        fire_at=f"{local:%Y-%m-%d %H:%M} ({timezone})",
        grace=format_duration(settings.report_schedule_grace, language),
    )


def format_line(line: ReportLine, language: str) -> str:
    status = STATUS_LABELS[language][line.status]
    if line.reason:
        status += f" ({REASON_LABELS[language].get(line.reason, line.reason)})"
    report = str(line.report_id) if line.report_id else "-"
    if language == "en":
        return f"student {line.student_id}  period {line.period}  status {status}  report {report}"
    return f"élève {line.student_id}  période {line.period}  statut {status}  rapport {report}"


def format_total(lines: Sequence[ReportLine], language: str) -> str:
    counts = Counter(line.status for line in lines)
    parts = []
    for status, (singular, plural) in TOTAL_LABELS[language].items():
        if counts[status]:
            parts.append(f"{counts[status]} {singular if counts[status] == 1 else plural}")
    details = f" ({', '.join(parts)})" if parts else ""
    if language == "en":
        return f"Total: {len(lines)} {'report' if len(lines) == 1 else 'reports'}{details}"
    return f"Total : {len(lines)} {'rapport' if len(lines) <= 1 else 'rapports'}{details}"


# The cli module registers these commands and so imports this module; importing it back
# inside the functions avoids the import cycle.


def _load_settings() -> Settings:
    from dashboard_jobs.cli import load_settings

    return load_settings()


def _parse_student_ids(values: list[str] | None) -> list[uuid.UUID]:
    from dashboard_jobs.cli import parse_uuids

    return list(dict.fromkeys(parse_uuids(values, "--student-id")))
