"""The scheduler: DST-correct fire times, one fire across replicas and restarts, the grace period."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text

from dashboard_jobs.producers.schedule import (
    REPORT_SCHEDULE,
    SUMMARY_REBUILD_SCHEDULE,
    fire_report_schedule,
    latest_fire_time,
    next_fire_times,
    run_due_fire,
    run_scheduler,
    scheduled_jobs,
)
from tests.helpers import scalar, wait_for
from tests.report_data import build_report_school, utc

WEEKLY = "0 6 * * 1"
PARIS = "Europe/Paris"
# Monday 3 March 2025, 06:00 in Paris: its week before starts in February.
FIRST_MONDAY_OF_MARCH = utc("2025-03-03T05:00Z")
REQUESTS = "SELECT count(*) FROM outbox WHERE type = 'PARENT_REPORT_REQUESTED'"


def test_fire_times_across_spring_change():
    after = utc("2025-03-17T11:00Z")  # 12:00 in Paris

    fires = next_fire_times(WEEKLY, PARIS, after, 4)

    assert fires == [
        utc("2025-03-24T05:00Z"),
        utc("2025-03-31T04:00Z"),
        utc("2025-04-07T04:00Z"),
        utc("2025-04-14T04:00Z"),
    ]


def test_fire_times_across_autumn_change():
    after = utc("2025-10-13T10:00Z")  # 12:00 in Paris

    fires = next_fire_times(WEEKLY, PARIS, after, 4)

    assert fires == [
        utc("2025-10-20T04:00Z"),
        utc("2025-10-27T05:00Z"),
        utc("2025-11-03T05:00Z"),
        utc("2025-11-10T05:00Z"),
    ]


def test_local_time_skipped_in_spring_fires_after_jump():
    # 02:30 does not exist in Paris on 30 March 2025; it fires at 03:30 CEST (01:30Z).
    assert next_fire_times("30 2 * * *", PARIS, utc("2025-03-29T12:00Z"), 1) == [utc("2025-03-30T01:30Z")]


def test_local_time_repeated_in_autumn_fires_once():
    fires = next_fire_times("30 2 * * *", PARIS, utc("2025-10-25T12:00Z"), 2)

    assert fires == [utc("2025-10-26T00:30Z"), utc("2025-10-27T01:30Z")]


def test_latest_fire_includes_exact_time():
    assert latest_fire_time(WEEKLY, PARIS, FIRST_MONDAY_OF_MARCH) == FIRST_MONDAY_OF_MARCH
    assert latest_fire_time(WEEKLY, PARIS, FIRST_MONDAY_OF_MARCH - timedelta(seconds=1)) == utc("2025-02-24T05:00Z")


@pytest.fixture
async def data(session_factory, clean_db):
    return await build_report_school(session_factory)


def report_job(settings, session_factory):
    return next(job for job in scheduled_jobs(settings, session_factory) if job.name == REPORT_SCHEDULE)


async def test_first_monday_covers_previous_month(settings, session_factory, data):
    await fire_report_schedule(session_factory, settings, FIRST_MONDAY_OF_MARCH)

    periods = await _requested(session_factory, "payload->>'period'")
    assert sorted(periods) == ["2025-02", "2025-02", "2025-03", "2025-03"]
    assert set(await _requested(session_factory, "payload->>'regenerate'")) == {"true"}
    assert set(await _requested(session_factory, "payload->'requested_by'->>'schedule'")) == {REPORT_SCHEDULE}


async def test_two_schedulers_enqueue_once(settings, session_factory, data):
    results = await asyncio.gather(
        fire_report_schedule(session_factory, settings, FIRST_MONDAY_OF_MARCH),
        fire_report_schedule(session_factory, settings, FIRST_MONDAY_OF_MARCH),
    )

    assert sorted(result is None for result in results) == [False, True]
    assert await scalar(session_factory, REQUESTS) == 4
    assert await _fire_status(session_factory, REPORT_SCHEDULE) == ["enqueued"]


async def test_restart_after_fire_enqueues_nothing(settings, session_factory, data):
    job = report_job(settings, session_factory)
    grace = settings.report_schedule_grace

    first = await run_due_fire(job, session_factory, FIRST_MONDAY_OF_MARCH + timedelta(minutes=1), grace)
    again = await run_due_fire(job, session_factory, FIRST_MONDAY_OF_MARCH + timedelta(minutes=5), grace)

    assert (first, again) == ("fired", "done")
    assert await scalar(session_factory, REQUESTS) == 4


async def test_missed_fire_within_grace_is_caught_up(settings, session_factory, data):
    job = report_job(settings, session_factory)

    outcome = await run_due_fire(job, session_factory, FIRST_MONDAY_OF_MARCH + timedelta(hours=5), timedelta(hours=6))

    assert outcome == "fired"
    assert await scalar(session_factory, REQUESTS) == 4


async def test_missed_fire_beyond_grace_is_skipped(settings, session_factory, data):
    job = report_job(settings, session_factory)

    outcome = await run_due_fire(job, session_factory, FIRST_MONDAY_OF_MARCH + timedelta(hours=7), timedelta(hours=6))

    assert outcome == "skipped"
    assert await scalar(session_factory, REQUESTS) == 0
    assert await _fire_status(session_factory, REPORT_SCHEDULE) == ["skipped"]


async def test_replicas_and_restart_fire_once(settings, session_factory, data):
    now = FIRST_MONDAY_OF_MARCH + timedelta(minutes=1)

    first_pair = [_CountingClock(now), _CountingClock(now)]
    await _run_until_one_pass(settings, session_factory, first_pair)
    restarted = [_CountingClock(now)]
    await _run_until_one_pass(settings, session_factory, restarted)

    assert await scalar(session_factory, REQUESTS) == 4
    assert await _fire_status(session_factory, REPORT_SCHEDULE) == ["enqueued"]
    assert await _fire_status(session_factory, SUMMARY_REBUILD_SCHEDULE) == ["enqueued"]
    assert await scalar(session_factory, "SELECT count(*) FROM dashboard_summary") == 2


class _CountingClock:
    """A fixed clock that records how often the scheduler read it."""

    def __init__(self, now) -> None:
        self.now = now
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.now


async def _run_until_one_pass(settings, session_factory, clocks: list[_CountingClock]) -> None:
    # The scheduler reads the clock before running the fires and again to compute its
    # sleep. So a second read means one full pass is done.
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_scheduler(settings, session_factory, stop, now_fn=clock)) for clock in clocks]
    try:
        async def passed() -> bool:
            return all(clock.reads >= 2 for clock in clocks)
        await wait_for(passed, what="one pass of every scheduler")
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _requested(session_factory, expression: str) -> list[str]:
    async with session_factory() as session:
        rows = await session.execute(text(f"SELECT {expression} FROM outbox WHERE type = 'PARENT_REPORT_REQUESTED'"))
        return [str(value) for value in rows.scalars()]


async def _fire_status(session_factory, schedule: str) -> list[str]:
    async with session_factory() as session:
        rows = await session.execute(text("SELECT status FROM schedule_fires WHERE schedule = :s"), {"s": schedule})
        return list(rows.scalars())
