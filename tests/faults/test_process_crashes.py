"""Relay and worker processes killed or stopped in the middle of their work, then restarted."""

from __future__ import annotations

from dashboard_jobs.consumers.reports import CONSUMER_NAME as REPORT_CONSUMER_NAME
from dashboard_jobs.consumers.summary import CONSUMER_NAME as SUMMARY_CONSUMER_NAME
from dashboard_jobs.consumers.topology import SUMMARY_CONSUMER
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from tests.faults.audit import (
    assert_nothing_lost_or_doubled,
    audit_pipeline,
    settle_and_audit,
    unapplied_deliveries,
)
from tests.faults.broker import queue_counts
from tests.faults.conftest import load_test_school
from tests.faults.workload import request_reports, write_task_backlog
from tests.helpers import scalar, wait_for

RELAY_KILLS = 3
# The relay is killed once this many messages were published since it started, which is
# well inside its first batches (500 rows each, two batches in flight at a time).
KILL_AFTER_MESSAGES = 100
# Rows per relay batch when copies of a message must end up close together in the queue:
# the distance between the two copies of a row is at most two batches, well within the
# summary consumer's prefetch of 256.
SMALL_RELAY_BATCH = 40
# A coalescing window long enough for the worker to receive its whole prefetch before its
# first batch, so both copies of each re-published row land in that batch.
BACKLOG_COALESCE_SECONDS = 1.0
# A duplicate is acknowledged with this log line once the inbox recognised it.
DUPLICATE_LOG_LINE = "duplicate summary refresh request acknowledged and skipped"
SHUTDOWN_GRACE_SECONDS = 5.0
# Closing connections and disposing of the engine after the grace period.
SHUTDOWN_MARGIN_SECONDS = 5.0
REPORT_STUDENTS = 160


async def inbox_count(session_factory, consumer: str) -> int:
    return await scalar(session_factory, "SELECT count(*) FROM inbox WHERE consumer = :consumer", consumer=consumer)


async def marked_requests(session_factory) -> int:
    """Return the refresh requests the relay marked published."""
    return await scalar(
        session_factory,
        "SELECT count(*) FROM outbox WHERE type = :type AND published_at IS NOT NULL",
        type=DashboardSummaryRefreshRequestedV1.TYPE,
    )


async def test_relay_killed_between_publish_and_mark(settings, session_factory, school, pipeline, publish_tap):
    """kill -9 the relay while batches are published but not yet marked, so its restart publishes them again.

    The tap queue receives a copy of every publish, so a tap holding more copies than there
    are rows proves that rows went out twice. The worker runs throughout and must apply
    each request once.
    """
    backlog = await write_task_backlog(session_factory, school.student_ids, per_student=50)
    pipeline.start("worker")
    await pipeline.wait_worker_consuming()

    for _ in range(RELAY_KILLS):
        published_at_start = await publish_tap.count()
        pipeline.start("relay")

        async def publishing() -> bool:
            pipeline.check_alive()
            return await publish_tap.count() >= published_at_start + KILL_AFTER_MESSAGES

        await wait_for(publishing, 30, "the relay to publish part of the backlog")
        await pipeline.kill("relay")

    assert await marked_requests(session_factory) < backlog, "the relay drained the whole backlog before the last kill"
    assert await publish_tap.count() > await marked_requests(session_factory), (
        "no kill landed between a publish and its mark"
    )

    pipeline.start("relay")
    audit = await settle_and_audit(session_factory, check_alive=pipeline.check_alive)

    assert audit.refresh_requests == backlog
    assert_nothing_lost_or_doubled(audit)
    assert await publish_tap.count() > backlog
    assert DUPLICATE_LOG_LINE in pipeline.log("worker"), "the worker saw no duplicate delivery"
    await pipeline.stop_all_cleanly()
    assert await unapplied_deliveries(settings, session_factory) == {}


async def test_duplicates_queued_together_are_acknowledged(settings, session_factory, school, make_pipeline):
    """Two copies of a message reach the worker in one burst: both are acknowledged and applied once.

    This happens when the relay dies between publish and mark while the worker is behind.
    Here the worker is stopped while the relay, with small batches, is killed and restarted.
    Each re-published row then waits in the queue a few dozen messages after its first
    copy, and the worker takes in a whole prefetch before it processes its first batch.
    """
    summary_queue = settings.queue_name(SUMMARY_CONSUMER)

    async def queued() -> int:
        return (await queue_counts(settings.rabbitmq_url, [summary_queue]))[summary_queue][0]

    backlog = await write_task_backlog(session_factory, school.student_ids, per_student=10)
    pipeline = make_pipeline(
        RELAY_BATCH_SIZE=str(SMALL_RELAY_BATCH),
        SUMMARY_COALESCE_SECONDS=str(BACKLOG_COALESCE_SECONDS),
        SHUTDOWN_GRACE_SECONDS=str(SHUTDOWN_GRACE_SECONDS),
    )
    for _ in range(RELAY_KILLS):
        queued_at_start = await queued()
        pipeline.start("relay")

        async def publishing() -> bool:
            pipeline.check_alive()
            return await queued() >= queued_at_start + SMALL_RELAY_BATCH

        await wait_for(publishing, 30, "the relay to publish its first batches")
        await pipeline.kill("relay")
        if await queued() > await marked_requests(session_factory):
            break

    assert await queued() > await marked_requests(session_factory), "no kill landed between a publish and its mark"

    pipeline.start("relay")

    async def drained() -> bool:
        pipeline.check_alive()
        return await marked_requests(session_factory) == backlog

    await wait_for(drained, 30, "the relay to publish the whole backlog")
    assert await queued() > backlog

    pipeline.start("worker")
    audit = await settle_and_audit(session_factory, check_alive=pipeline.check_alive)

    assert_nothing_lost_or_doubled(audit)
    await pipeline.stop_all_cleanly()
    assert await queued() == 0, "deliveries the worker never acknowledged went back to the queue"
    assert await unapplied_deliveries(settings, session_factory) == {}


async def test_worker_killed_mid_burst(settings, session_factory, school, pipeline):
    """kill -9 the worker while it has summary and report messages in flight, then restart it."""
    await request_reports(session_factory, school.student_ids)
    backlog = await write_task_backlog(session_factory, school.student_ids, per_student=30)
    pipeline.start("relay")
    pipeline.start("worker")

    async def busy() -> bool:
        pipeline.check_alive()
        summaries = await inbox_count(session_factory, SUMMARY_CONSUMER_NAME)
        reports = await inbox_count(session_factory, REPORT_CONSUMER_NAME)
        return summaries >= 100 and reports >= 5

    await wait_for(busy, 60, "the worker to be half-way through the burst")
    await pipeline.kill("worker")
    at_kill = await audit_pipeline(session_factory)

    assert at_kill.refresh_requests_without_inbox_row or at_kill.report_requests_without_inbox_row, (
        "the worker had processed everything before it was killed"
    )

    pipeline.restart("worker")
    audit = await settle_and_audit(session_factory, check_alive=pipeline.check_alive)

    assert audit.refresh_requests == backlog
    assert audit.report_requests == len(school.student_ids)
    assert_nothing_lost_or_doubled(audit)
    await pipeline.stop_all_cleanly()
    assert await unapplied_deliveries(settings, session_factory) == {}


async def test_worker_sigterm_during_slow_reports(settings, session_factory, clean_db, topology, make_pipeline):
    """SIGTERM the worker while `parent-report --via-broker` waits for many reports.

    The worker exits cleanly within its shutdown grace. Once restarted it finishes the
    batch, and the command, still waiting, prints every report as generated.
    """
    school = await load_test_school(settings.database_url, session_factory, students=REPORT_STUDENTS)
    pipeline = make_pipeline(SHUTDOWN_GRACE_SECONDS=str(SHUTDOWN_GRACE_SECONDS))
    pipeline.start("relay")
    pipeline.start("worker")
    await pipeline.wait_worker_consuming()
    pipeline.start("parent-report", "parent-report", "--via-broker", "--wait-seconds", "120", "--lang", "en")

    async def generating() -> bool:
        pipeline.check_alive()
        return await inbox_count(session_factory, REPORT_CONSUMER_NAME) >= 20

    await wait_for(generating, 60, "the worker to generate the first reports")
    pipeline.terminate("worker")
    exit_code = await pipeline.wait_exit("worker", SHUTDOWN_GRACE_SECONDS + SHUTDOWN_MARGIN_SECONDS)

    assert exit_code == 0, f"the worker did not exit cleanly within its grace. End of its log:\n{pipeline.log('worker')[-3000:]}"
    assert await inbox_count(session_factory, REPORT_CONSUMER_NAME) < REPORT_STUDENTS, (
        "the worker generated every report before SIGTERM"
    )

    pipeline.restart("worker")
    command_exit_code = await pipeline.wait_exit("parent-report", 120)
    audit = await settle_and_audit(session_factory, check_alive=lambda: pipeline.check_alive("relay", "worker"))

    assert command_exit_code == 0, pipeline.log("parent-report")[-3000:]
    assert f"Total: {REPORT_STUDENTS} reports ({REPORT_STUDENTS} generated)" in pipeline.log("parent-report")
    assert audit.report_requests == REPORT_STUDENTS
    assert len(school.student_ids) == REPORT_STUDENTS
    assert_nothing_lost_or_doubled(audit)
    await pipeline.stop_all_cleanly()
    assert await unapplied_deliveries(settings, session_factory) == {}
