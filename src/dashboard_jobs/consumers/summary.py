"""The summary consumer: refresh requested dashboard summaries, coalescing bursts.

Requests that arrive within ``coalesce_seconds`` of each other are processed in one
transaction: one inbox row each, one set-based upsert for the union of their students and
one DASHBOARD_SUMMARY_REFRESH_COMPLETED event listing the request message ids. Every
message is acknowledged only after that transaction commits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.consumers.inbox import record_new_messages
from dashboard_jobs.contracts.base import Envelope
from dashboard_jobs.contracts.summary import (
    DashboardSummaryRefreshCompletedV1,
    DashboardSummaryRefreshRequestedV1,
)
from dashboard_jobs.domain.summary import refresh_summaries
from dashboard_jobs.outbox.writer import add_event

log = logging.getLogger(__name__)

CONSUMER_NAME = "summary"


@dataclass
class _Pending:
    envelope: Envelope
    request: DashboardSummaryRefreshRequestedV1
    done: asyncio.Future[bool] = field(repr=False)


@dataclass(frozen=True)
class BatchOutcome:
    messages: int
    duplicates: int
    refreshed: int
    skipped: int


class SummaryRefresher:
    """Collects refresh requests and processes them in coalesced batches."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        coalesce_seconds: float,
        max_batch_messages: int,
    ) -> None:
        self._sessions = session_factory
        self._window = coalesce_seconds
        self._max_batch = max_batch_messages
        self._pending: list[_Pending] = []
        self._arrived = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._busy = False
        self.recomputations = 0
        self.requests = 0

    @property
    def idle(self) -> bool:
        """True when no request waits and no batch is being processed."""
        return not self._pending and not self._busy

    async def submit(self, envelope: Envelope, request: DashboardSummaryRefreshRequestedV1) -> bool:
        """Wait until the request is committed with its batch; return False for a duplicate.

        Raises the batch's exception when its transaction failed, so the caller can decide
        the message's fate.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(envelope, request, future))
        self._arrived.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever(), name="summary-flusher")
        return await future

    async def _flush_forever(self) -> None:
        while self._pending:
            if len(self._pending) < self._max_batch and self._window > 0:
                await asyncio.sleep(self._window)
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            self._busy = True
            try:
                await self._process(batch)
            except Exception as error:  # noqa: BLE001 - every waiting handler gets the error
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(error)
            finally:
                self._busy = False

    async def _process(self, batch: list[_Pending]) -> BatchOutcome:
        by_id = {pending.envelope.message_id: pending for pending in batch}
        async with self._sessions() as session, session.begin():
            new_ids = await record_new_messages(session, CONSUMER_NAME, list(by_id))
            new = [by_id[message_id] for message_id in by_id if message_id in new_ids]

            refreshed: list[uuid.UUID] = []
            skipped: list[uuid.UUID] = []
            if new:
                student_ids = {student_id for pending in new for student_id in pending.request.student_ids}
                result = await refresh_summaries(session, sorted(student_ids))
                refreshed, skipped = result.refreshed, result.skipped
                first = new[0].envelope
                await add_event(
                    session,
                    DashboardSummaryRefreshCompletedV1(
                        student_ids=refreshed,
                        skipped_student_ids=skipped,
                        request_message_ids=[pending.envelope.message_id for pending in new],
                        refreshed_at=datetime.now(UTC),
                    ),
                    aggregate_type="dashboard_summary_refresh",
                    aggregate_id=str(first.message_id),
                    correlation_id=first.correlation_id,
                    causation_id=first.message_id,
                    traceparent=first.traceparent,
                )

        self.requests += len(new)
        self.recomputations += len(refreshed)
        for message_id, pending in by_id.items():
            pending.done.set_result(message_id in new_ids)

        outcome = BatchOutcome(len(batch), len(batch) - len(new), len(refreshed), len(skipped))
        log.info(
            "summary batch committed",
            extra={
                "messages": outcome.messages,
                "duplicates": outcome.duplicates,
                "students_refreshed": outcome.refreshed,
                "students_skipped": outcome.skipped,
                "message_ids": [str(m) for m in list(by_id)[:20]],
            },
        )
        if skipped:
            log.warning(
                "refresh requested for unknown students",
                extra={"student_ids": [str(s) for s in skipped[:20]]},
            )
        return outcome
