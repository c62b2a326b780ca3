"""The scheduler: the weekly parent reports and the nightly summary rebuild.

Cron expressions are read in a time zone: croniter walks the local wall-clock times and
each one is converted to UTC with zoneinfo, so "0 6 * * 1" in Europe/Paris fires at
05:00Z in winter and 04:00Z in summer. A local time skipped by the spring change fires
at the same offset after the jump (02:30 becomes 03:30), and a local time repeated by the
autumn change fires once, at its first occurrence.

Each fire is claimed by inserting its ``schedule_fires`` row with ON CONFLICT DO NOTHING.
For the reports the claim commits in the same transaction as the outbox rows, so two
replicas, or a restart at fire time, enqueue the requests once. A fire missed while no
scheduler ran is caught up if it is at most ``report_schedule_grace`` old, otherwise it is
recorded as skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.contracts.reports import RequestedBySchedule
from dashboard_jobs.domain.periods import periods_touched, utc_now
from dashboard_jobs.domain.summary import rebuild_all_summaries
from dashboard_jobs.producers.reports import enqueue_report_requests
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)

REPORT_SCHEDULE = "parent_reports"
SUMMARY_REBUILD_SCHEDULE = "summary_rebuild"

# Each fire regenerates the reports of every period that overlaps this many days before it,
# so the first fire of a month also finalises the previous month.
REPORT_LOOKBACK = timedelta(days=7)

# The loop re-reads the wall clock at least this often, so a clock step (NTP, a resumed
# virtual machine) delays a fire by at most this long.
MAX_SLEEP_SECONDS = 60.0

CLAIM_FIRE = text(
    """
    INSERT INTO schedule_fires (schedule, fire_at, status)
    VALUES (:schedule, :fire_at, :status)
    ON CONFLICT (schedule, fire_at) DO NOTHING
    RETURNING fire_at
    """
)


def next_fire_times(expression: str, timezone: str, after: datetime, count: int = 1) -> list[datetime]:
    """Return the next ``count`` fire times strictly after the aware ``after``, in UTC."""
    zone = ZoneInfo(timezone)
    iterator = croniter(expression, after.astimezone(zone).replace(tzinfo=None))
    fires: list[datetime] = []
    while len(fires) < count:
        fire = _local_to_utc(iterator.get_next(datetime), zone)
        if fire > after and (not fires or fire > fires[-1]):
            fires.append(fire)
    return fires


def latest_fire_time(expression: str, timezone: str, at_or_before: datetime) -> datetime:
    """Return the latest fire time not after the aware ``at_or_before``, in UTC."""
    zone = ZoneInfo(timezone)
    # croniter's get_prev is strictly earlier than its start, so start one second later.
    start = at_or_before.astimezone(zone).replace(tzinfo=None) + timedelta(seconds=1)
    iterator = croniter(expression, start)
    while True:
        fire = _local_to_utc(iterator.get_prev(datetime), zone)
        if fire <= at_or_before:
            return fire


def _local_to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    # fold=0 picks the first of two repeated local times, and for a local time inside a
    # spring-forward gap the offset in force before the jump.
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class CronJob:
    """A named cron expression and what one fire does."""

    name: str
    expression: str
    timezone: str
    fire: Callable[[datetime], Awaitable[bool]]
    """Runs the fire at this time; returns False when another scheduler already claimed it."""

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.expression):
            raise ValueError(
                f"cron expression {self.expression!r} of schedule {self.name!r} is invalid; "
                "use five fields such as '0 6 * * 1' (minute hour day month weekday)."
            )
        ZoneInfo(self.timezone)


async def claim_fire(session: AsyncSession, schedule: str, fire_at: datetime, status: str) -> bool:
    """Insert the fire's row in the session's transaction; return False when it already exists."""
    row = await session.execute(CLAIM_FIRE, {"schedule": schedule, "fire_at": fire_at, "status": status})
    return row.first() is not None


async def fire_report_schedule(
    session_factory: async_sessionmaker[AsyncSession], settings: Settings, fire_at: datetime
) -> list[uuid.UUID] | None:
    """Enqueue regenerated reports of every student for the periods of the week before ``fire_at``.

    Returns the batch ids, one per period, or None when this fire was already claimed.
    """
    periods = periods_touched(fire_at - REPORT_LOOKBACK, fire_at, settings.timezone)
    requested_by = RequestedBySchedule(schedule=REPORT_SCHEDULE)
    async with session_factory() as session, session.begin():
        if not await claim_fire(session, REPORT_SCHEDULE, fire_at, "enqueued"):
            return None
        batch_ids = [
            await enqueue_report_requests(session, None, period, True, requested_by) for period in periods
        ]
    log.info(
        "report schedule fired",
        extra={"fire_at": fire_at.isoformat(), "periods": [str(p) for p in periods],
               "batch_ids": [str(b) for b in batch_ids]},
    )
    return batch_ids


async def fire_summary_rebuild(
    session_factory: async_sessionmaker[AsyncSession], settings: Settings, fire_at: datetime
) -> int | None:
    """Claim the fire, then rebuild every summary; return the count, or None when already claimed.

    The claim commits before the rebuild, so a scheduler that dies during the rebuild does
    not retry it; the next fire rebuilds everything anyway.
    """
    async with session_factory() as session, session.begin():
        if not await claim_fire(session, SUMMARY_REBUILD_SCHEDULE, fire_at, "enqueued"):
            return None
    count = await rebuild_all_summaries(session_factory, settings.summary_rebuild_batch_size)
    log.info("summary rebuild fired", extra={"fire_at": fire_at.isoformat(), "students": count})
    return count


def scheduled_jobs(settings: Settings, session_factory: async_sessionmaker[AsyncSession]) -> list[CronJob]:
    async def reports(fire_at: datetime) -> bool:
        return await fire_report_schedule(session_factory, settings, fire_at) is not None

    async def summaries(fire_at: datetime) -> bool:
        return await fire_summary_rebuild(session_factory, settings, fire_at) is not None

    return [
        CronJob(REPORT_SCHEDULE, settings.report_schedule_cron, settings.report_schedule_timezone, reports),
        CronJob(SUMMARY_REBUILD_SCHEDULE, settings.summary_rebuild_cron, settings.timezone, summaries),
    ]


async def run_due_fire(
    job: CronJob, session_factory: async_sessionmaker[AsyncSession], now: datetime, grace: timedelta
) -> str:
    """Run or skip the latest fire of ``job`` not after ``now``; return what happened.

    The result is "fired", "skipped" (older than ``grace``, now recorded) or "done" (its
    row already existed, so this or another scheduler handled it).
    """
    fire_at = latest_fire_time(job.expression, job.timezone, now)
    if now - fire_at <= grace:
        return "fired" if await job.fire(fire_at) else "done"

    async with session_factory() as session, session.begin():
        skipped = await claim_fire(session, job.name, fire_at, "skipped")
    if not skipped:
        return "done"
    log.warning(
        "schedule fire missed beyond the grace period, recorded as skipped",
        extra={"schedule": job.name, "fire_at": fire_at.isoformat(), "grace": str(grace)},
    )
    return "skipped"


async def run_scheduler(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    stop_event: asyncio.Event,
    now_fn: Callable[[], datetime] = utc_now,
) -> None:
    """Fire every scheduled job at its times until ``stop_event`` is set.

    A fire in progress when ``stop_event`` is set gets ``shutdown_grace_seconds`` to finish
    its transaction. After that it is cancelled and rolls back, and the next scheduler
    runs the fire again if it is still within its grace period.
    """
    jobs = scheduled_jobs(settings, session_factory)
    log.info("scheduler starting", extra={"schedules": {job.name: job.expression for job in jobs}})
    while not stop_event.is_set():
        now = now_fn()
        for job in jobs:
            if stop_event.is_set():
                break
            fire = asyncio.create_task(
                _run_job_safely(job, session_factory, now, settings.report_schedule_grace),
                name=f"schedule-{job.name}",
            )
            await _finish_fire(fire, job, stop_event, settings.shutdown_grace_seconds)

        if stop_event.is_set():
            break
        wake_at = min(next_fire_times(job.expression, job.timezone, now)[0] for job in jobs)
        delay = min(MAX_SLEEP_SECONDS, max(0.0, (wake_at - now_fn()).total_seconds()))
        try:
            await asyncio.wait_for(stop_event.wait(), timeout=delay)
        except TimeoutError:
            pass
    log.info("scheduler stopped")


async def _finish_fire(
    fire: asyncio.Task[None], job: CronJob, stop_event: asyncio.Event, grace_seconds: float
) -> None:
    stop_waiter = asyncio.create_task(stop_event.wait())
    try:
        await asyncio.wait({fire, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_waiter.cancel()
    if fire.done():
        return

    started = time.monotonic()
    log.info("scheduler shutdown started, finishing the fire in progress",
             extra={"schedule": job.name, "grace_seconds": grace_seconds})
    done, _ = await asyncio.wait({fire}, timeout=grace_seconds)
    if done:
        log.info("scheduler shutdown finished", extra={"schedule": job.name,
                                                       "seconds": round(time.monotonic() - started, 2)})
        return
    fire.cancel()
    await asyncio.wait({fire})
    log.warning(
        "scheduler shutdown grace period over, the fire in progress was cancelled and rolled back",
        extra={"schedule": job.name, "grace_seconds": grace_seconds},
    )


async def _run_job_safely(
    job: CronJob, session_factory: async_sessionmaker[AsyncSession], now: datetime, grace: timedelta
) -> None:
    try:
        await run_due_fire(job, session_factory, now, grace)
    except Exception:
        # The claim rolled back with the failed work (for the reports), so the next wake-up,
        # at most MAX_SLEEP_SECONDS later, tries the same fire again while it is within grace.
        log.exception("schedule fire failed, retrying at the next wake-up", extra={"schedule": job.name})
