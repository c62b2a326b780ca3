"""The summary consumer: refresh requested dashboard summaries, coalescing bursts.

Requests that arrive within ``coalesce_seconds`` of each other are processed in one
transaction: one inbox row each, one set-based upsert for the union of their students and
one DASHBOARD_SUMMARY_REFRESH_COMPLETED event listing the request message ids. Every
message is acknowledged only after that transaction commits. When the transaction fails,
every message of the batch gets the error and the failure policy settles each one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.consumers.failures import FailureKind, classify
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

    @property
    def waiting(self) -> int:
        """Requests submitted and not yet in a batch."""
        return len(self._pending)

    async def abandon(self, timeout_seconds: float = 5.0) -> None:
        """Drop the waiting requests and cancel the batch in progress, whose transaction rolls back.

        For shutdown, once the broker no longer delivers: the handlers of these requests
        never acknowledge, and the broker redelivers their messages when the channel closes.
        """
        self._pending = []
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            flusher.cancel()
            await asyncio.wait({flusher}, timeout=timeout_seconds)

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
                if len(batch) > 1 and classify(error) is not FailureKind.TRANSIENT:
                    await self._process_one_by_one(batch, error)
                else:
                    _fail(batch, error)
            finally:
                self._busy = False

    async def _process_one_by_one(self, batch: list[_Pending], error: Exception) -> None:
        # A transient error (database down, deadlock) hits every message of the batch alike,
        # so they all fail and retry. Any other error may come from one message, so each is
        # processed alone: the others commit and only the failing one goes on to retry and
        # the dead-letter queue, instead of taking its batch with it on every attempt.
        log.warning(
            "summary batch failed, processing its messages one by one",
            extra={"messages": len(batch), "error": f"{type(error).__name__}: {error}"},
        )
        for pending in batch:
            try:
                await self._process([pending])
            except Exception as single_error:  # noqa: BLE001 - the waiting handler gets the error
                _fail([pending], single_error)

    async def _process(self, batch: list[_Pending]) -> BatchOutcome:
        # A redelivery can share a batch with the first delivery of its message: the first
        # one counts, and every delivery still gets its result below.
        by_id: dict[uuid.UUID, _Pending] = {}
        for pending in batch:
            by_id.setdefault(pending.envelope.message_id, pending)
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
        for pending in batch:
            message_id = pending.envelope.message_id
            is_new = message_id in new_ids and by_id[message_id] is pending
            # A handler cancelled at shutdown no longer waits; its message is redelivered.
            if not pending.done.done():
                pending.done.set_result(is_new)

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


def _fail(batch: list[_Pending], error: Exception) -> None:
    for pending in batch:
        if not pending.done.done():
            pending.done.set_exception(error)
