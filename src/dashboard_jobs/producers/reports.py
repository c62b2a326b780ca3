"""Report requests made outside a domain write: from the API, the CLI and the schedule.

Requests travel like every other effect. Each becomes a PARENT_REPORT_REQUESTED row in the
outbox, one per student and period, committed with the batch's ``report_requests`` rows.
The relay publishes them, and the report consumer replies to each with
PARENT_REPORT_COMPLETED. The CLI's direct mode is the exception because it generates the
reports in its own process.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.contracts.reports import (
    ParentReportCompletedV1,
    ParentReportRequestedV1,
    RequestedBy,
    RequestedByAccount,
)
from dashboard_jobs.domain.models import Student
from dashboard_jobs.domain.periods import Period, utc_now
from dashboard_jobs.domain.report_models import Report
from dashboard_jobs.domain.report_requests import Batch, insert_cached_requests, insert_requests, load_batch
from dashboard_jobs.domain.reports import ReportOutcome, load_reports, produce_reports
from dashboard_jobs.outbox.writer import add_events
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)

AGGREGATE_TYPE = "parent_report"

# Students per transaction in direct mode: large enough for set-based statements to pay
# off, small enough that one transaction stays short.
DIRECT_BATCH_SIZE = 500

NEXT_STUDENT_IDS = text("SELECT id FROM students WHERE id > :after ORDER BY id LIMIT :limit")


async def enqueue_report_requests(
    session: AsyncSession,
    student_ids: Sequence[uuid.UUID] | None,
    period: Period,
    regenerate: bool,
    requested_by: RequestedBy,
    *,
    batch_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Add one PARENT_REPORT_REQUESTED outbox row per student and return the batch id.

    ``None`` means every student. The rows are written in the session's transaction, which
    the caller commits; nothing reaches the broker before that commit.
    """
    batch_id = batch_id or uuid.uuid4()
    ids = await _all_student_ids(session) if student_ids is None else list(dict.fromkeys(student_ids))
    if not ids:
        return batch_id

    await insert_requests(
        session,
        batch_id,
        ids,
        str(period),
        regenerate=regenerate,
        requested_by=requested_by.model_dump_json(),
        requester_account_id=_requester(requested_by),
    )
    events = [
        ParentReportRequestedV1(
            student_id=student_id,
            period=str(period),
            regenerate=regenerate,
            requested_by=requested_by,
            batch_id=batch_id,
        )
        for student_id in ids
    ]
    await add_report_events(session, events, correlation_id=batch_id)
    log.info(
        "report requests enqueued",
        extra={"batch_id": str(batch_id), "period": str(period), "requests": len(ids), "regenerate": regenerate},
    )
    return batch_id


@dataclass(frozen=True)
class BatchSubmission:
    """A batch as submitted: stored reports returned at once, and the students left to process."""

    batch_id: uuid.UUID
    cached: list[Report]
    pending: list[uuid.UUID]


async def submit_report_batch(
    session: AsyncSession,
    student_ids: Sequence[uuid.UUID] | None,
    period: Period,
    regenerate: bool,
    requested_by: RequestedBy,
    now: datetime,
) -> BatchSubmission:
    """Serve stored reports at once and enqueue requests for the rest, in the session's transaction.

    Without ``regenerate`` a student whose report of ``period`` exists is recorded in the
    batch as cached and sends no message. ``None`` means every student.
    """
    batch_id = uuid.uuid4()
    ids = await _all_student_ids(session) if student_ids is None else list(dict.fromkeys(student_ids))
    cached = [] if regenerate else await load_reports(session, ids, str(period))
    if cached:
        await insert_cached_requests(
            session,
            batch_id,
            {report.student_id: report.id for report in cached},
            str(period),
            requested_by=requested_by.model_dump_json(),
            requester_account_id=_requester(requested_by),
            completed_at=now,
        )
    cached_ids = {report.student_id for report in cached}
    pending = [student_id for student_id in ids if student_id not in cached_ids]
    await enqueue_report_requests(session, pending, period, regenerate, requested_by, batch_id=batch_id)
    return BatchSubmission(batch_id=batch_id, cached=cached, pending=pending)


async def add_report_events(
    session: AsyncSession, events: Sequence[ParentReportRequestedV1 | ParentReportCompletedV1], *, correlation_id: uuid.UUID
) -> None:
    """Insert report events as outbox rows with one statement, keyed by student and period."""
    await add_events(
        session,
        [(event, f"{event.student_id}:{event.period}") for event in events],
        aggregate_type=AGGREGATE_TYPE,
        correlation_id=correlation_id,
    )


async def generate_reports_direct(
    session_factory: async_sessionmaker[AsyncSession],
    student_ids: Sequence[uuid.UUID] | None,
    period: Period,
    regenerate: bool,
    settings: Settings,
    *,
    now_fn: Callable[[], datetime] = utc_now,
) -> list[ReportOutcome]:
    """Generate or reuse reports in this process and return one outcome per student.

    Students are processed in batches of DIRECT_BATCH_SIZE, each in its own transaction
    that also adds the PARENT_REPORT_COMPLETED events, so other consumers of those events
    learn about reports made this way too. ``None`` means every student, in id order.
    """
    batch_id = uuid.uuid4()
    outcomes: list[ReportOutcome] = []
    async for ids in _student_batches(session_factory, student_ids):
        async with session_factory() as session, session.begin():
            batch = await produce_reports(
                session,
                ids,
                period,
                regenerate=regenerate,
                now=now_fn(),
                timezone=settings.timezone,
                locale=settings.report_locale,
            )
            await add_report_events(session, [outcome.completed_event(batch_id) for outcome in batch], correlation_id=batch_id)
        outcomes.extend(batch)
    log.info(
        "reports generated directly",
        extra={"batch_id": str(batch_id), "period": str(period), "students": len(outcomes)},
    )
    return outcomes


async def wait_for_batch(
    session_factory: async_sessionmaker[AsyncSession],
    batch_id: uuid.UUID,
    timeout_seconds: float,
    *,
    poll_seconds: float = 0.2,
) -> Batch | None:
    """Poll the batch's requests until every one has an outcome or ``timeout_seconds`` pass.

    Returns the batch as last read (check ``complete``), or None when it does not exist.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout_seconds)
    while True:
        async with session_factory() as session:
            batch = await load_batch(session, batch_id)
        if batch is None or batch.complete or loop.time() >= deadline:
            return batch
        await asyncio.sleep(min(poll_seconds, max(0.0, deadline - loop.time())))


async def _student_batches(
    session_factory: async_sessionmaker[AsyncSession], student_ids: Sequence[uuid.UUID] | None
) -> AsyncIterator[list[uuid.UUID]]:
    if student_ids is not None:
        ids = list(dict.fromkeys(student_ids))
        for start in range(0, len(ids), DIRECT_BATCH_SIZE):
            yield ids[start : start + DIRECT_BATCH_SIZE]
        return

    after = uuid.UUID(int=0)
    while True:
        async with session_factory() as session:
            ids = list((await session.execute(NEXT_STUDENT_IDS, {"after": after, "limit": DIRECT_BATCH_SIZE})).scalars())
        if not ids:
            return
        yield ids
        after = ids[-1]


async def _all_student_ids(session: AsyncSession) -> list[uuid.UUID]:
    return list((await session.scalars(select(Student.id).order_by(Student.id))).all())


def _requester(requested_by: RequestedBy) -> uuid.UUID | None:
    return requested_by.account_id if isinstance(requested_by, RequestedByAccount) else None
