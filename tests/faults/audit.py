"""The checks that end every fault scenario: nothing lost, nothing done twice, nothing left over.

``audit_pipeline`` reads only the database, so its verdict does not depend on what
happened to the processes and the broker. It checks that:

- the outbox is drained, with no unpublished row and no parked row,
- every DASHBOARD_SUMMARY_REFRESH_REQUESTED has exactly one inbox row of the summary
  consumer and is listed by exactly one DASHBOARD_SUMMARY_REFRESH_COMPLETED,
- every student named in a request has a summary at least as recent as their latest
  write, and every summary equals a recomputation from the source tables,
- every PARENT_REPORT_REQUESTED has exactly one inbox row of the report consumer, exactly
  one PARENT_REPORT_COMPLETED caused by it, a stored report, and a completed
  ``report_requests`` row.

Requests that a scenario sends to the dead-letter queue on purpose are left out.
``unapplied_deliveries`` then empties the broker's queues once the worker has stopped and
returns the messages that no consumer applied.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.consumers.reports import CONSUMER_NAME as REPORT_CONSUMER_NAME
from dashboard_jobs.consumers.summary import CONSUMER_NAME as SUMMARY_CONSUMER_NAME
from dashboard_jobs.consumers.topology import REPORT_CONSUMER, SUMMARY_CONSUMER, build_topology
from dashboard_jobs.contracts.reports import ParentReportCompletedV1, ParentReportRequestedV1
from dashboard_jobs.contracts.summary import (
    DashboardSummaryRefreshCompletedV1,
    DashboardSummaryRefreshRequestedV1,
)
from dashboard_jobs.demo import audit as demo_audit
from dashboard_jobs.settings import Settings
from tests.faults.broker import take_messages

SETTLE_TIMEOUT_SECONDS = 90.0

TYPES = {
    "refresh_requested": DashboardSummaryRefreshRequestedV1.TYPE,
    "refresh_completed": DashboardSummaryRefreshCompletedV1.TYPE,
    "report_requested": ParentReportRequestedV1.TYPE,
    "report_completed": ParentReportCompletedV1.TYPE,
}

OUTBOX_STATE = text(
    """
    SELECT count(*) FILTER (WHERE published_at IS NULL) AS unpublished,
           count(*) FILTER (WHERE failed_at IS NOT NULL) AS parked
    FROM outbox
    """
)

# Requests of one type that have no inbox row of the given consumer.
UNPROCESSED_REQUESTS = text(
    """
    SELECT o.id
    FROM outbox o
    LEFT JOIN inbox i ON i.consumer = :consumer AND i.message_id = o.id
    WHERE o.type = :type AND i.message_id IS NULL AND o.id <> ALL(CAST(:excluded AS uuid[]))
    ORDER BY o.seq
    """
)

# Refresh requests listed by zero or by several completed refreshes, with that number.
REFRESHES_NOT_COMPLETED_ONCE = text(
    """
    WITH listed AS (
        SELECT CAST(request.id AS uuid) AS request_id, count(*) AS completions
        FROM outbox c
        CROSS JOIN LATERAL jsonb_array_elements_text(c.payload -> 'request_message_ids') AS request(id)
        WHERE c.type = :refresh_completed
        GROUP BY 1
    )
    SELECT o.id, coalesce(listed.completions, 0)
    FROM outbox o
    LEFT JOIN listed ON listed.request_id = o.id
    WHERE o.type = :refresh_requested
      AND coalesce(listed.completions, 0) <> 1
      AND o.id <> ALL(CAST(:excluded AS uuid[]))
    ORDER BY o.seq
    """
)

# Report requests completed by zero or by several PARENT_REPORT_COMPLETED events.
REPORTS_NOT_COMPLETED_ONCE = text(
    """
    WITH answered AS (
        SELECT CAST(headers ->> 'causation_id' AS uuid) AS request_id, count(*) AS completions
        FROM outbox
        WHERE type = :report_completed AND headers ->> 'causation_id' IS NOT NULL
        GROUP BY 1
    )
    SELECT o.id, coalesce(answered.completions, 0)
    FROM outbox o
    LEFT JOIN answered ON answered.request_id = o.id
    WHERE o.type = :report_requested
      AND coalesce(answered.completions, 0) <> 1
      AND o.id <> ALL(CAST(:excluded AS uuid[]))
    ORDER BY o.seq
    """
)

# Report requests without a stored report of their student and period.
REPORT_REQUESTS_WITHOUT_REPORT = text(
    """
    SELECT o.id
    FROM outbox o
    LEFT JOIN reports r
      ON r.student_id = CAST(o.payload ->> 'student_id' AS uuid) AND r.period = o.payload ->> 'period'
    WHERE o.type = :report_requested AND r.id IS NULL AND o.id <> ALL(CAST(:excluded AS uuid[]))
    ORDER BY o.seq
    """
)

UNFINISHED_REPORT_REQUESTS = text(
    "SELECT count(*) FILTER (WHERE status IS NULL), count(*) FILTER (WHERE status = 'failed') FROM report_requests"
)

REQUESTED_STUDENTS = text(
    """
    SELECT DISTINCT CAST(student.id AS uuid)
    FROM outbox o
    CROSS JOIN LATERAL jsonb_array_elements_text(o.payload -> 'student_ids') AS student(id)
    WHERE o.type = :refresh_requested AND o.id <> ALL(CAST(:excluded AS uuid[]))
    """
)

REQUEST_COUNTS = text(
    "SELECT count(*) FILTER (WHERE type = :refresh_requested), count(*) FILTER (WHERE type = :report_requested) "
    "FROM outbox WHERE id <> ALL(CAST(:excluded AS uuid[]))"
)

APPLIED_MESSAGES = text(
    "SELECT CAST(message_id AS text) FROM inbox WHERE consumer = :consumer AND message_id = ANY(CAST(:ids AS uuid[]))"
)


@dataclass(frozen=True)
class PipelineAudit:
    """The state of the pipeline as the database shows it. A clean run has only zeros and empty lists."""

    refresh_requests: int
    report_requests: int
    unpublished_outbox_rows: int
    parked_outbox_rows: int
    refresh_requests_without_inbox_row: list[uuid.UUID]
    refresh_requests_not_completed_once: dict[uuid.UUID, int]
    stale_summaries: list[uuid.UUID]
    mismatched_summaries: list[uuid.UUID]
    report_requests_without_inbox_row: list[uuid.UUID]
    report_requests_not_completed_once: dict[uuid.UUID, int]
    report_requests_without_report: list[uuid.UUID]
    unfinished_report_requests: int
    failed_report_requests: int

    @property
    def settled(self) -> bool:
        """True when nothing is left to publish or to consume."""
        return (
            self.unpublished_outbox_rows == 0
            and not self.refresh_requests_without_inbox_row
            and not self.report_requests_without_inbox_row
        )


async def audit_pipeline(
    sessions: async_sessionmaker[AsyncSession], *, dead_lettered: Collection[uuid.UUID] = ()
) -> PipelineAudit:
    """Read the state of the outbox, the inbox, the summaries and the reports."""
    params = {**TYPES, "excluded": sorted(dead_lettered)}
    async with sessions() as session:
        refresh_requests, report_requests = (await session.execute(REQUEST_COUNTS, params)).one()
        unpublished, parked = (await session.execute(OUTBOX_STATE)).one()
        refresh_without_inbox = await _ids(
            session, UNPROCESSED_REQUESTS, {**params, "consumer": SUMMARY_CONSUMER_NAME, "type": TYPES["refresh_requested"]}
        )
        report_without_inbox = await _ids(
            session, UNPROCESSED_REQUESTS, {**params, "consumer": REPORT_CONSUMER_NAME, "type": TYPES["report_requested"]}
        )
        refresh_not_once = dict((await session.execute(REFRESHES_NOT_COMPLETED_ONCE, params)).all())
        report_not_once = dict((await session.execute(REPORTS_NOT_COMPLETED_ONCE, params)).all())
        without_report = await _ids(session, REPORT_REQUESTS_WITHOUT_REPORT, params)
        unfinished, failed = (await session.execute(UNFINISHED_REPORT_REQUESTS)).one()
        touched = await _ids(session, REQUESTED_STUDENTS, params)
        stale = await demo_audit.stale_summaries(session, touched)
    async with sessions() as session:
        mismatched, _ = await demo_audit.summary_mismatches(session)

    return PipelineAudit(
        refresh_requests=refresh_requests,
        report_requests=report_requests,
        unpublished_outbox_rows=unpublished,
        parked_outbox_rows=parked,
        refresh_requests_without_inbox_row=refresh_without_inbox,
        refresh_requests_not_completed_once=refresh_not_once,
        stale_summaries=stale,
        mismatched_summaries=mismatched,
        report_requests_without_inbox_row=report_without_inbox,
        report_requests_not_completed_once=report_not_once,
        report_requests_without_report=without_report,
        unfinished_report_requests=unfinished,
        failed_report_requests=failed,
    )


async def settle_and_audit(
    sessions: async_sessionmaker[AsyncSession],
    *,
    dead_lettered: Collection[uuid.UUID] = (),
    timeout: float = SETTLE_TIMEOUT_SECONDS,
    check_alive: Callable[[], None] | None = None,
) -> PipelineAudit:
    """Wait until the outbox is drained and every request was consumed, then audit.

    Returns the audit as last read when ``timeout`` seconds pass first, so the failing
    assertions name what is missing. ``check_alive``, when given, is called on every poll
    and should raise when a process the pipeline needs has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check_alive is not None:
            check_alive()
        audit = await audit_pipeline(sessions, dead_lettered=dead_lettered)
        if audit.settled or time.monotonic() > deadline:
            return audit
        await asyncio.sleep(0.2)


def assert_nothing_lost_or_doubled(audit: PipelineAudit) -> None:
    """Assert every property of a clean pipeline, one assertion per property."""
    assert audit.unpublished_outbox_rows == 0, "outbox rows were never published"
    assert audit.parked_outbox_rows == 0, "outbox rows were parked after failed publishes"
    assert audit.refresh_requests_without_inbox_row == [], "refresh requests never reached the summary consumer"
    assert audit.refresh_requests_not_completed_once == {}, (
        "refresh requests listed by no completed refresh, or by several (request id: completions)"
    )
    assert audit.stale_summaries == [], "summaries older than their student's latest write"
    assert audit.mismatched_summaries == [], "summaries that differ from a recomputation"
    assert audit.report_requests_without_inbox_row == [], "report requests never reached the report consumer"
    assert audit.report_requests_not_completed_once == {}, (
        "report requests completed by no PARENT_REPORT_COMPLETED, or by several (request id: completions)"
    )
    assert audit.report_requests_without_report == [], "report requests without a stored report"
    assert audit.unfinished_report_requests == 0, "report batches with requests still pending"
    assert audit.failed_report_requests == 0, "report requests that failed"


async def _ids(session: AsyncSession, statement, params: dict[str, object]) -> list[uuid.UUID]:
    return list((await session.execute(statement, params)).scalars())


async def unapplied_deliveries(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> dict[str, list[str]]:
    """Remove the messages left in the consumer, retry and dead-letter queues, and return those not applied.

    Call it once the worker stopped, because the broker has then put every unacknowledged
    delivery back in its queue. A message left in a consumer queue or a retry queue whose id is in
    its consumer's inbox is a late copy that the inbox would skip, so it is not returned.
    Every message of a dead-letter queue is. The result maps queue names to message ids,
    and leaves out the queues with nothing to report.
    """
    consumers = {
        settings.queue_name(SUMMARY_CONSUMER): SUMMARY_CONSUMER_NAME,
        settings.queue_name(REPORT_CONSUMER): REPORT_CONSUMER_NAME,
    }
    unapplied: dict[str, list[str]] = {}
    for spec in build_topology(settings).queues:
        if spec.dead_letter_queue is None:
            continue
        for name in (spec.name, *(retry.name for retry in spec.retry_queues)):
            ids = [str(message.message_id) for message in await take_messages(settings.rabbitmq_url, name)]
            applied = await _applied(sessions, consumers[spec.name], ids)
            if left := [message_id for message_id in ids if message_id not in applied]:
                unapplied[name] = left
        if dead := await take_messages(settings.rabbitmq_url, spec.dead_letter_queue):
            unapplied[spec.dead_letter_queue] = [str(message.message_id) for message in dead]
    return unapplied


async def _applied(sessions: async_sessionmaker[AsyncSession], consumer: str, message_ids: list[str]) -> set[str]:
    if not message_ids:
        return set()
    async with sessions() as session:
        rows = await session.execute(APPLIED_MESSAGES, {"consumer": consumer, "ids": message_ids})
        return set(rows.scalars())
