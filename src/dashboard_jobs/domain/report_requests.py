"""Report requests grouped in batches: recorded when enqueued, completed by the report consumer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard_jobs.domain.report_models import ReportRequest
from dashboard_jobs.domain.reports import ReportOutcome

INSERT_REQUESTS = text(
    """
    INSERT INTO report_requests
        (batch_id, student_id, period, regenerate, requested_by, requester_account_id)
    SELECT :batch_id, student_id, :period, :regenerate, CAST(:requested_by AS jsonb), :requester_account_id
    FROM unnest(CAST(:student_ids AS uuid[])) AS student_id
    ON CONFLICT DO NOTHING
    """
)

# Requests served at once by reports already stored, so they never travel as messages.
INSERT_CACHED_REQUESTS = text(
    """
    INSERT INTO report_requests
        (batch_id, student_id, period, regenerate, requested_by, requester_account_id,
         status, report_id, completed_at)
    SELECT :batch_id, c.student_id, :period, false, CAST(:requested_by AS jsonb), :requester_account_id,
           'cached', c.report_id, :completed_at
    FROM unnest(CAST(:student_ids AS uuid[]), CAST(:report_ids AS uuid[])) AS c(student_id, report_id)
    ON CONFLICT DO NOTHING
    """
)

RECORD_OUTCOMES = text(
    """
    UPDATE report_requests AS r
    SET status = o.status, report_id = o.report_id, reason = o.reason, completed_at = :completed_at
    FROM unnest(
        CAST(:student_ids AS uuid[]), CAST(:statuses AS text[]), CAST(:report_ids AS uuid[]),
        CAST(:reasons AS text[])
    ) AS o(student_id, status, report_id, reason)
    WHERE r.batch_id = :batch_id AND r.period = :period AND r.student_id = o.student_id
    """
)


@dataclass(frozen=True)
class BatchRequest:
    """One (student, period) of a batch and, once processed, its outcome."""

    student_id: uuid.UUID
    period: str
    status: str | None
    report_id: uuid.UUID | None
    reason: str | None
    completed_at: datetime | None


@dataclass(frozen=True)
class Batch:
    batch_id: uuid.UUID
    requester_account_id: uuid.UUID | None
    requests: list[BatchRequest]

    @property
    def pending(self) -> list[BatchRequest]:
        return [request for request in self.requests if request.status is None]

    @property
    def complete(self) -> bool:
        return not self.pending


async def insert_requests(
    session: AsyncSession,
    batch_id: uuid.UUID,
    student_ids: Sequence[uuid.UUID],
    period: str,
    *,
    regenerate: bool,
    requested_by: str,
    requester_account_id: uuid.UUID | None,
) -> None:
    """Record the requests of a batch in the session's transaction; ``requested_by`` is JSON text."""
    await session.execute(
        INSERT_REQUESTS,
        {
            "batch_id": batch_id,
            "student_ids": list(student_ids),
            "period": period,
            "regenerate": regenerate,
            "requested_by": requested_by,
            "requester_account_id": requester_account_id,
        },
    )


async def insert_cached_requests(
    session: AsyncSession,
    batch_id: uuid.UUID,
    report_ids: dict[uuid.UUID, uuid.UUID],
    period: str,
    *,
    requested_by: str,
    requester_account_id: uuid.UUID | None,
    completed_at: datetime,
) -> None:
    """Record requests already served by stored reports; ``report_ids`` maps each student to its report."""
    await session.execute(
        INSERT_CACHED_REQUESTS,
        {
            "batch_id": batch_id,
            "period": period,
            "student_ids": list(report_ids),
            "report_ids": list(report_ids.values()),
            "requested_by": requested_by,
            "requester_account_id": requester_account_id,
            "completed_at": completed_at,
        },
    )


async def record_outcomes(
    session: AsyncSession, batch_id: uuid.UUID, outcomes: Sequence[ReportOutcome], completed_at: datetime
) -> None:
    """Mark the requests of ``outcomes`` completed, in one statement per period."""
    by_period: dict[str, list[ReportOutcome]] = {}
    for outcome in outcomes:
        by_period.setdefault(outcome.period, []).append(outcome)
    for period, group in by_period.items():
        columns = _outcome_columns(batch_id, period, group)
        await session.execute(RECORD_OUTCOMES, {**columns, "completed_at": completed_at})


async def load_batch(session: AsyncSession, batch_id: uuid.UUID) -> Batch | None:
    """Return the batch with its requests in student order, or None when no such batch exists."""
    rows = (
        await session.scalars(
            select(ReportRequest)
            .where(ReportRequest.batch_id == batch_id)
            .order_by(ReportRequest.period, ReportRequest.student_id)
        )
    ).all()
    if not rows:
        return None
    requests = [
        BatchRequest(row.student_id, row.period, row.status, row.report_id, row.reason, row.completed_at)
        for row in rows
    ]
    return Batch(batch_id=batch_id, requester_account_id=rows[0].requester_account_id, requests=requests)


def _outcome_columns(batch_id: uuid.UUID, period: str, outcomes: Sequence[ReportOutcome]) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "period": period,
        "student_ids": [outcome.student_id for outcome in outcomes],
        "statuses": [outcome.status for outcome in outcomes],
        "report_ids": [outcome.report_id for outcome in outcomes],
        "reasons": [outcome.reason for outcome in outcomes],
    }
