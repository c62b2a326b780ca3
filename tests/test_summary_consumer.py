"""The summary consumer on the real RabbitMQ: inbox deduplication, coalescing, dead letters."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from dashboard_jobs.consumers.app import build_worker
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.outbox.publisher import ConfirmingPublisher
from dashboard_jobs.outbox.relay import Relay
from dashboard_jobs.outbox.writer import add_event
from tests.helpers import insert_students, scalar, wait_for
from tests.consumer_fixtures import amqp, running_worker, summary_request  # noqa: F401 - fixtures

COMPLETED_ROWS = "SELECT count(*) FROM outbox WHERE type = 'DASHBOARD_SUMMARY_REFRESH_COMPLETED'"


async def inbox_count(sessions) -> int:
    return await scalar(sessions, "SELECT count(*) FROM inbox WHERE consumer = 'summary'")


async def test_request_travels_through_relay_to_fresh_summary(settings, session_factory, clean_db, topology, running_worker):
    [student] = await insert_students(session_factory, 1)
    async with session_factory() as session, session.begin():
        request_id = await add_event(
            session,
            DashboardSummaryRefreshRequestedV1(student_ids=[student], reason="test", requested_at=datetime.now(UTC)),
            aggregate_type="student", aggregate_id=str(student),
        )
    publisher = ConfirmingPublisher(settings.rabbitmq_url, topology, timeout_seconds=10)
    await publisher.connect()
    try:
        await Relay(session_factory, publisher, batch_size=10, interval_seconds=1).drain()

        async def summarised() -> bool:
            return await scalar(session_factory, "SELECT count(*) FROM dashboard_summary WHERE student_id = :s", s=student) == 1
        await wait_for(summarised, what="the summary row")
        await wait_for(lambda: _completed_exists(session_factory), what="the COMPLETED outbox row")
    finally:
        await publisher.close()

    async with session_factory() as session:
        payload = (await session.execute(text(
            "SELECT payload FROM outbox WHERE type = 'DASHBOARD_SUMMARY_REFRESH_COMPLETED'"))).scalar_one()
    assert payload["student_ids"] == [str(student)]
    assert payload["request_message_ids"] == [str(request_id)]
    assert payload["skipped_student_ids"] == []


async def _completed_exists(sessions) -> bool:
    return await scalar(sessions, COMPLETED_ROWS) >= 1


async def test_redelivered_message_changes_nothing(settings, session_factory, clean_db, amqp, running_worker):
    _, exchange = amqp
    [student] = await insert_students(session_factory, 1)
    message_id = uuid.uuid4()
    routing_key = DashboardSummaryRefreshRequestedV1.TYPE

    await exchange.publish(summary_request([student], message_id), routing_key=routing_key)
    await wait_for(lambda: _completed_exists(session_factory), what="the first refresh")
    first_refresh = await scalar(session_factory, "SELECT refreshed_at FROM dashboard_summary WHERE student_id = :s", s=student)

    await exchange.publish(summary_request([student], message_id), routing_key=routing_key)
    marker = uuid.uuid4()
    await exchange.publish(summary_request([student], marker), routing_key=routing_key)

    async def marker_processed() -> bool:
        return await scalar(session_factory, "SELECT count(*) FROM inbox WHERE message_id = :m", m=marker) == 1
    await wait_for(marker_processed, what="the message published after the duplicate")

    assert await inbox_count(session_factory) == 2
    # One COMPLETED for the original and one for the marker; none for the duplicate.
    assert await scalar(session_factory, COMPLETED_ROWS) == 2
    async with session_factory() as session:
        covered = (await session.execute(text(
            "SELECT jsonb_array_elements_text(payload->'request_message_ids') FROM outbox "
            "WHERE type = 'DASHBOARD_SUMMARY_REFRESH_COMPLETED'"))).scalars().all()
    assert covered.count(str(message_id)) == 1
    assert first_refresh is not None


async def test_burst_coalesces_into_few_recomputations(settings, session_factory, clean_db, amqp, topology):
    _, exchange = amqp
    students = await insert_students(session_factory, 10)
    requests = 300
    for index in range(requests):
        chosen = [students[index % 10], students[(index + 3) % 10]]
        await exchange.publish(summary_request(chosen), routing_key=DashboardSummaryRefreshRequestedV1.TYPE)

    worker = build_worker(settings, session_factory)
    await worker.broker.start()
    try:
        async def all_processed() -> bool:
            return await inbox_count(session_factory) == requests
        await wait_for(all_processed, timeout=30, what=f"{requests} requests in the inbox")
    finally:
        await worker.broker.stop()

    async with session_factory() as session:
        recomputations = (await session.execute(text(
            "SELECT coalesce(sum(jsonb_array_length(payload->'student_ids')), 0) FROM outbox "
            "WHERE type = 'DASHBOARD_SUMMARY_REFRESH_COMPLETED'"))).scalar_one()
        covered = (await session.execute(text(
            "SELECT count(*) FROM outbox o, jsonb_array_elements_text(o.payload->'request_message_ids') "
            "WHERE o.type = 'DASHBOARD_SUMMARY_REFRESH_COMPLETED'"))).scalar_one()
    # Without coalescing each request would recompute 2 students: 600 recomputations.
    assert recomputations <= requests * 2 / 10
    assert covered == requests
    assert await scalar(session_factory, "SELECT count(*) FROM dashboard_summary") == 10


@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("not JSON", {"body": b"{not json"}),
        ("wrong types", {"body": json.dumps({"student_ids": "everyone", "reason": 3, "requested_at": "x"}).encode()}),
        ("unknown version", {"version": 99}),
        ("unknown type", {"event_type": "SOMETHING_ELSE"}),
        ("too many students", {"body": json.dumps({
            "student_ids": [str(uuid.uuid4()) for _ in range(1001)], "reason": "x",
            "requested_at": "2025-01-01T00:00:00Z"}).encode()}),
    ],
)
async def test_invalid_message_is_dead_lettered(settings, session_factory, clean_db, amqp, topology, running_worker, case, kwargs):
    channel, exchange = amqp
    [student] = await insert_students(session_factory, 1)
    spec = topology.queues[0]
    bad = summary_request([student], **kwargs)
    # Bind-independent: publish straight to the summary queue through the default exchange.
    await channel.default_exchange.publish(bad, routing_key=spec.name)
    good_id = uuid.uuid4()
    await exchange.publish(summary_request([student], good_id), routing_key=DashboardSummaryRefreshRequestedV1.TYPE)

    async def good_processed() -> bool:
        return await scalar(session_factory, "SELECT count(*) FROM inbox WHERE message_id = :m", m=good_id) == 1
    await wait_for(good_processed, what="the valid message after the invalid one")

    dead_letters = await channel.get_queue(spec.dead_letter_queue)
    async def dead_lettered() -> bool:
        declared = await channel.declare_queue(spec.dead_letter_queue, passive=True)
        return declared.declaration_result.message_count == 1
    await wait_for(dead_lettered, what=f"the {case} message in the dead-letter queue")
    message = await dead_letters.get(no_ack=True)
    assert message.message_id == bad.message_id
    assert message.headers["x-dead-letter-reason"] == "permanent"
    assert message.headers["x-exception-type"] == "dashboard_jobs.consumers.messages.PermanentMessageError"
    assert message.headers["x-attempts"] == 1


async def test_two_deliveries_in_one_batch_both_answered(settings, session_factory, clean_db):
    """A redelivery that lands in the same batch as its first delivery must not hang its handler."""
    import asyncio

    from dashboard_jobs.consumers.summary import SummaryRefresher
    from dashboard_jobs.contracts.base import Envelope

    [student] = await insert_students(session_factory, 1)
    refresher = SummaryRefresher(session_factory, coalesce_seconds=0.2, max_batch_messages=10)
    message_id = uuid.uuid4()
    envelope = Envelope(message_id=message_id, type=DashboardSummaryRefreshRequestedV1.TYPE, version=1,
                        occurred_at=datetime.now(UTC), correlation_id=message_id)
    request = DashboardSummaryRefreshRequestedV1(student_ids=[student], reason="test", requested_at=datetime.now(UTC))

    answers = await asyncio.wait_for(
        asyncio.gather(refresher.submit(envelope, request), refresher.submit(envelope, request)), timeout=10
    )

    assert sorted(answers) == [False, True]
    assert await inbox_count(session_factory) == 1
    assert await scalar(session_factory, COMPLETED_ROWS) == 1
