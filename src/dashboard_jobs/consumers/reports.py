"""The report consumer: generate or reuse one parent report per PARENT_REPORT_REQUESTED.

Each message is processed in one transaction: its inbox row, the report upsert, the
request's outcome in ``report_requests`` and the PARENT_REPORT_COMPLETED outbox row.
The message is acknowledged only after that transaction commits, so a crash before the
commit redelivers it and a redelivery after the commit is skipped by the inbox. A failure
is settled by the consumers' failure policy: a later retry or the dead-letter queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.schemas import ExchangeType
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.consumers.failures import FailurePolicy
from dashboard_jobs.consumers.inbox import record_new_messages
from dashboard_jobs.consumers.messages import decode, keep_raw_body
from dashboard_jobs.consumers.topology import REPORT_CONSUMER, Topology
from dashboard_jobs.contracts.base import Envelope
from dashboard_jobs.contracts.reports import ParentReportRequestedV1
from dashboard_jobs.domain.periods import parse_period, utc_now
from dashboard_jobs.domain.report_requests import record_outcomes
from dashboard_jobs.domain.reports import ReportOutcome, produce_reports
from dashboard_jobs.outbox.writer import add_event
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)

CONSUMER_NAME = "parent_report"


class ReportRequestHandler:
    """Applies one report request in one transaction."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        settings: Settings,
        now_fn: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = session_factory
        self._settings = settings
        self._now = now_fn

    async def handle(self, envelope: Envelope, request: ParentReportRequestedV1) -> ReportOutcome | None:
        """Process ``request`` and return its outcome, or None when the message was already processed."""
        now = self._now()
        async with self._sessions() as session, session.begin():
            if not await record_new_messages(session, CONSUMER_NAME, [envelope.message_id]):
                return None

            [outcome] = await produce_reports(
                session,
                [request.student_id],
                parse_period(request.period),
                regenerate=request.regenerate,
                now=now,
                timezone=self._settings.timezone,
                locale=self._settings.report_locale,
            )

            await record_outcomes(session, request.batch_id, [outcome], completed_at=now)
            await add_event(
                session,
                outcome.completed_event(request.batch_id),
                aggregate_type="parent_report",
                aggregate_id=f"{outcome.student_id}:{outcome.period}",
                correlation_id=envelope.correlation_id,
                causation_id=envelope.message_id,
                traceparent=envelope.traceparent,
            )
        return outcome


def register_report_consumer(
    broker: RabbitBroker,
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    topology: Topology,
) -> None:
    """Subscribe the report consumer to its quorum queue; nothing connects until broker.start()."""
    handler = ReportRequestHandler(session_factory, settings)
    spec = topology.queue(REPORT_CONSUMER)
    queue = RabbitQueue(spec.name, durable=True, arguments=spec.arguments, routing_key=spec.routing_keys[0])
    exchange = RabbitExchange(topology.exchange, type=ExchangeType.TOPIC, durable=True)
    failures = FailurePolicy(broker, spec, settings.consumer_retry_delays_seconds, settings.publish_timeout_seconds)

    @broker.subscriber(
        queue,
        exchange,
        channel=Channel(prefetch_count=settings.report_prefetch),
        ack_policy=AckPolicy.MANUAL,
        decoder=keep_raw_body,
    )
    async def handle_parent_report_request(message: RabbitMessage) -> None:
        await _consume(handler, failures, message)


async def _consume(handler: ReportRequestHandler, failures: FailurePolicy, message: RabbitMessage) -> None:
    try:
        decoded = decode(message.raw_message, expected=ParentReportRequestedV1)
    except Exception as error:  # noqa: BLE001 - the policy classifies every failure
        await failures.handle(message, error)
        return

    request = decoded.event
    extra = {
        "message_id": str(decoded.envelope.message_id),
        "correlation_id": str(decoded.envelope.correlation_id),
        "student_id": str(request.student_id),
        "period": request.period,
    }
    log.info("report request received", extra=extra)
    try:
        outcome = await handler.handle(decoded.envelope, request)
    except Exception as error:  # noqa: BLE001 - the policy classifies every failure
        await failures.handle(message, error)
        return

    await message.ack()
    if outcome is None:
        log.info("duplicate report request acknowledged and skipped", extra=extra)
    elif outcome.status == "failed":
        log.warning("report request failed permanently", extra={**extra, "reason": outcome.reason})
    else:
        log.info("report request processed", extra={**extra, "status": outcome.status, "report_id": str(outcome.report_id)})
