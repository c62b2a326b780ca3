"""A message no consumer can process, published between two valid ones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import insert

from dashboard_jobs.consumers.failures import EXCEPTION_MESSAGE_HEADER, REASON_HEADER, DeadLetterReason
from dashboard_jobs.consumers.topology import SUMMARY_CONSUMER, build_topology
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.domain.models import OutboxMessage
from dashboard_jobs.outbox.writer import add_event
from tests.faults.audit import assert_nothing_lost_or_doubled, settle_and_audit, unapplied_deliveries
from tests.faults.broker import queue_counts, take_messages
from tests.helpers import scalar, wait_for


async def request_refresh(session, student_id: uuid.UUID) -> uuid.UUID:
    event = DashboardSummaryRefreshRequestedV1(
        student_ids=[student_id], reason="task.created", requested_at=datetime.now(UTC)
    )
    return await add_event(session, event, aggregate_type="student", aggregate_id=str(student_id))


async def add_poison_request(session, student_id: uuid.UUID) -> uuid.UUID:
    """Add a refresh request whose body breaks its contract, as a faulty producer could."""
    poison_id = uuid.uuid4()
    body = {"student_ids": ["not-a-student-id"], "reason": "task.created", "requested_at": datetime.now(UTC).isoformat()}
    await session.execute(
        insert(OutboxMessage).values(
            id=poison_id,
            aggregatetype="student",
            aggregateid=str(student_id),
            type=DashboardSummaryRefreshRequestedV1.TYPE,
            version=DashboardSummaryRefreshRequestedV1.VERSION,
            payload=body,
            headers={"correlation_id": str(poison_id)},
        )
    )
    return poison_id


async def test_poison_message_between_two_valid_ones(settings, session_factory, school, pipeline):
    """The invalid request is dead-lettered with its reason, and the valid ones on both sides are applied."""
    first_student, second_student = school.student_ids[:2]
    async with session_factory() as session, session.begin():
        await request_refresh(session, first_student)
        poison_id = await add_poison_request(session, first_student)
        await request_refresh(session, second_student)
    dead_letter_queue = build_topology(settings).queue(SUMMARY_CONSUMER).dead_letter_queue

    async def dead_lettered() -> bool:
        pipeline.check_alive()
        return (await queue_counts(settings.rabbitmq_url, [dead_letter_queue]))[dead_letter_queue][0] >= 1

    pipeline.start("worker")
    pipeline.start("relay")
    audit = await settle_and_audit(session_factory, dead_lettered={poison_id}, check_alive=pipeline.check_alive)
    await wait_for(dead_lettered, 30, "the poison message to reach the dead-letter queue")
    dead_letters = await take_messages(settings.rabbitmq_url, dead_letter_queue)

    assert audit.refresh_requests == 2
    assert_nothing_lost_or_doubled(audit)
    assert await scalar(session_factory, "SELECT count(*) FROM inbox WHERE message_id = :id", id=poison_id) == 0
    assert [message.message_id for message in dead_letters] == [str(poison_id)]
    assert dead_letters[0].headers[REASON_HEADER] == DeadLetterReason.PERMANENT.value
    assert "invalid body" in dead_letters[0].headers[EXCEPTION_MESSAGE_HEADER]
    await pipeline.stop_all_cleanly()
    assert await unapplied_deliveries(settings, session_factory) == {}
