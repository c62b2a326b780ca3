"""The relay against the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
from sqlalchemy import text

from dashboard_jobs.consumers.topology import SUMMARY_CONSUMER
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.outbox.publisher import ConfirmingPublisher, OutboxRow
from dashboard_jobs.outbox.relay import Relay
from dashboard_jobs.outbox.writer import add_event
from tests.helpers import scalar


def refresh_request() -> DashboardSummaryRefreshRequestedV1:
    return DashboardSummaryRefreshRequestedV1(
        student_ids=[uuid.uuid4()], reason="test", requested_at=datetime.now(UTC)
    )


async def add_events(sessions, count: int) -> list[uuid.UUID]:
    async with sessions() as session, session.begin():
        return [
            await add_event(session, refresh_request(), aggregate_type="student", aggregate_id="s")
            for _ in range(count)
        ]


def make_relay(settings, sessions, publisher, batch_size: int = 100) -> Relay:
    return Relay(sessions, publisher, batch_size=batch_size, interval_seconds=1.0)


@pytest.fixture
async def publisher(settings, topology):
    publisher = ConfirmingPublisher(settings.rabbitmq_url, topology, timeout_seconds=10)
    await publisher.connect()
    yield publisher
    await publisher.close()


async def drain_queue(settings, queue_suffix: str, expected: int, timeout: float = 30.0) -> list[str]:
    """Consume ``expected`` messages from a queue (acknowledging them) and return their ids."""
    ids: list[str] = []
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.get_queue(settings.queue_name(queue_suffix))
        async with asyncio.timeout(timeout):
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    ids.append(message.message_id)
                    if len(ids) >= expected:
                        break
        # Anything beyond the expected count would be a duplicate: check the queue is empty.
        declared = await channel.declare_queue(queue.name, passive=True)
        for _ in range(declared.declaration_result.message_count):
            extra = await queue.get(no_ack=True)
            ids.append(extra.message_id)
    finally:
        await connection.close()
    return ids


async def test_relay_publishes_only_committed_rows(settings, session_factory, clean_db, publisher):
    committed = await add_events(session_factory, 3)

    # A transaction still open when the relay runs: its row must not be published.
    async with session_factory() as open_session:
        await open_session.begin()
        uncommitted = await add_event(open_session, refresh_request(), aggregate_type="student", aggregate_id="s")
        await make_relay(settings, session_factory, publisher).drain()
        await open_session.rollback()

    received = await drain_queue(settings, SUMMARY_CONSUMER, expected=3)
    assert sorted(received) == sorted(str(i) for i in committed)
    assert str(uncommitted) not in received
    assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_relay_marks_nothing_before_the_confirm(settings, session_factory, clean_db, publisher):
    ids = await add_events(session_factory, 5)
    release = asyncio.Event()
    publishing = asyncio.Event()

    class HeldPublisher:
        async def publish(self, row: OutboxRow) -> None:
            publishing.set()
            await release.wait()
            await publisher.publish(row)

    relay = make_relay(settings, session_factory, HeldPublisher())
    task = asyncio.create_task(relay.drain())
    await asyncio.wait_for(publishing.wait(), 10)

    assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == 0
    release.set()
    assert await task == 5
    assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == 5
    assert sorted(await drain_queue(settings, SUMMARY_CONSUMER, expected=5)) == sorted(map(str, ids))


async def test_unroutable_message_stays_unpublished(settings, session_factory, clean_db, publisher):
    routable = await add_events(session_factory, 1)
    async with session_factory() as session, session.begin():
        await session.execute(text(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, version, payload, headers) "
            "VALUES (:id, 'student', 's', 'NOBODY_LISTENS_TO_THIS', 1, '{}', '{}')"
        ), {"id": (unroutable := uuid.uuid4())})

    result = await make_relay(settings, session_factory, publisher).publish_batch()

    assert (result.published, result.failed) == (1, 1)
    async with session_factory() as session:
        row = (await session.execute(text(
            "SELECT published_at, attempts, last_error, available_at > now() AS delayed FROM outbox WHERE id = :id"
        ), {"id": unroutable})).mappings().one()
    assert row["published_at"] is None
    assert row["attempts"] == 1
    assert "NO_ROUTE" in row["last_error"] or "PublishError" in row["last_error"]
    assert row["delayed"] is True
    assert await drain_queue(settings, SUMMARY_CONSUMER, expected=1) == [str(routable[0])]


async def test_two_relays_publish_each_row_once(settings, session_factory, clean_db, publisher, topology):
    total = 5_000
    async with session_factory() as session, session.begin():
        await session.execute(text(
            """
            INSERT INTO outbox (id, aggregatetype, aggregateid, type, version, payload, headers)
            SELECT gen_random_uuid(), 'student', 's', :type, 1,
                   jsonb_build_object('student_ids', jsonb_build_array(gen_random_uuid()),
                                      'reason', 'bulk', 'requested_at', now()),
                   '{}'
            FROM generate_series(1, :total)
            """
        ), {"type": DashboardSummaryRefreshRequestedV1.TYPE, "total": total})

    second = ConfirmingPublisher(settings.rabbitmq_url, topology, timeout_seconds=10)
    await second.connect()
    try:
        counts = await asyncio.gather(
            make_relay(settings, session_factory, publisher, batch_size=200).drain(),
            make_relay(settings, session_factory, second, batch_size=200).drain(),
        )
    finally:
        await second.close()

    assert sum(counts) == total
    assert all(count > 0 for count in counts), f"one relay did all the work: {counts}"
    received = await drain_queue(settings, SUMMARY_CONSUMER, expected=total, timeout=60)
    assert len(received) == total
    assert len(set(received)) == total
    assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_retention_deletes_only_old_published_rows(settings, session_factory, clean_db, publisher):
    await add_events(session_factory, 3)
    relay = make_relay(settings, session_factory, publisher)
    await relay.drain()
    await add_events(session_factory, 1)
    async with session_factory() as session, session.begin():
        await session.execute(text(
            "UPDATE outbox SET published_at = now() - interval '8 days' WHERE published_at IS NOT NULL"
        ))

    deleted = await relay.delete_expired()

    assert deleted == 3
    assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
