"""Graceful shutdown: every in-flight message is committed and acknowledged, or neither."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import asyncpg
import httpx
import pytest
from sqlalchemy import text

from dashboard_jobs.consumers.summary import CONSUMER_NAME, SummaryRefresher
from dashboard_jobs.consumers.topology import SUMMARY_CONSUMER
from dashboard_jobs.contracts.base import Envelope
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshCompletedV1, DashboardSummaryRefreshRequestedV1
from dashboard_jobs.db import asyncpg_dsn
from dashboard_jobs.demo.processes import free_port
from dashboard_jobs.outbox.publisher import ConfirmingPublisher, OutboxRow
from dashboard_jobs.outbox.relay import Relay
from dashboard_jobs.processes import _stop_relay
from dashboard_jobs.producers.schedule import REPORT_SCHEDULE, run_scheduler
from tests.cli_process import CliProcess
from tests.helpers import insert_students, scalar, wait_for
from tests.tcp_proxy import TcpProxy
from tests.test_relay_failures import _port, _via


@pytest.fixture
async def publisher(settings, topology):
    publisher = ConfirmingPublisher(settings.rabbitmq_url, topology, timeout_seconds=10)
    await publisher.connect()
    yield publisher
    await publisher.close()


async def enqueue_refresh_requests(session_factory, publisher, students: list[uuid.UUID]) -> None:
    """Publish one refresh request per student, through the outbox and the relay."""
    async with session_factory() as session, session.begin():
        await session.execute(text(
            """
            INSERT INTO outbox (id, aggregatetype, aggregateid, type, version, payload, headers)
            SELECT gen_random_uuid(), 'student', student_id::text, :type, 1,
                   jsonb_build_object('student_ids', jsonb_build_array(student_id),
                                      'reason', 'burst', 'requested_at', now()),
                   '{}'
            FROM unnest(CAST(:students AS uuid[])) AS student_id
            """
        ), {"type": DashboardSummaryRefreshRequestedV1.TYPE, "students": students})
    relay = Relay(session_factory, publisher, batch_size=500, interval_seconds=1, concurrency=2)
    assert await relay.drain() == len(students)


async def queue_depth(settings, suffix: str) -> int:
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(settings.queue_name(suffix), passive=True)
        return declared.declaration_result.message_count
    finally:
        await connection.close()


async def processed_requests(session_factory) -> int:
    return await scalar(session_factory, "SELECT count(*) FROM inbox WHERE consumer = :consumer",
                        consumer=CONSUMER_NAME)


async def waiting_on_lock(session_factory) -> bool:
    return await scalar(
        session_factory,
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )


class StudentLock:
    """Holds FOR UPDATE on every student, so a summary refresh (FOR NO KEY UPDATE) blocks."""

    def __init__(self, settings) -> None:
        self._dsn = asyncpg_dsn(settings.database_url)
        self._connection: asyncpg.Connection | None = None
        self._transaction = None

    async def __aenter__(self) -> StudentLock:
        self._connection = await asyncpg.connect(self._dsn)
        self._transaction = self._connection.transaction()
        await self._transaction.start()
        await self._connection.execute("SELECT id FROM students FOR UPDATE")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._transaction.rollback()
        await self._connection.close()


async def audit(settings, session_factory, published: int) -> int:
    """Check that every request is either processed exactly once or still queued; return the processed count."""
    async def settled() -> bool:
        return await processed_requests(session_factory) + await queue_depth(settings, SUMMARY_CONSUMER) == published

    # Unacknowledged deliveries go back to the queue when the worker's connection closes.
    await wait_for(settled, timeout=30, what="processed + queued to add up to the published count")
    processed = await processed_requests(session_factory)

    assert await queue_depth(settings, SUMMARY_CONSUMER) == published - processed
    # Inbox row and effect commit together: a student has a summary exactly when its request is in the inbox.
    assert await scalar(session_factory, """
        SELECT count(*) FROM (
            SELECT (o.payload->'student_ids'->>0)::uuid FROM inbox i JOIN outbox o ON o.id = i.message_id
            WHERE i.consumer = 'summary'
            EXCEPT SELECT student_id FROM dashboard_summary
        ) AS missing_summaries""") == 0
    assert await scalar(session_factory, "SELECT count(*) FROM dashboard_summary") == processed
    # Each committed batch wrote its COMPLETED event listing exactly the requests it recorded.
    assert await scalar(session_factory, """
        SELECT count(*) FROM outbox o, jsonb_array_elements_text(o.payload->'request_message_ids') AS r(id)
        WHERE o.type = :type""", type=DashboardSummaryRefreshCompletedV1.TYPE) == processed
    assert await queue_depth(settings, f"{SUMMARY_CONSUMER}.dlq") == 0
    return processed


async def test_worker_sigterm_mid_burst(
    settings, session_factory, clean_db, publisher
):
    students = await insert_students(session_factory, 3000)
    await enqueue_refresh_requests(session_factory, publisher, students)
    worker = CliProcess(settings, "worker", SHUTDOWN_GRACE_SECONDS="20", SUMMARY_MAX_BATCH_MESSAGES="100",
                        SUMMARY_PREFETCH="300")
    try:
        await wait_for(lambda: _some_processed(session_factory), timeout=60, what="the first batch to commit")
        worker.signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(worker.wait, 60)
    finally:
        output = worker.stop()

    assert exit_code == 0, output
    assert "worker shutdown started" in output
    assert "worker shutdown finished" in output
    assert "abandoned" not in output
    processed = await audit(settings, session_factory, len(students))
    assert processed > 0


async def test_worker_sigterm_rolls_back_blocked_batch(settings, session_factory, clean_db, publisher):
    students = await insert_students(session_factory, 500)
    await enqueue_refresh_requests(session_factory, publisher, students)

    async with StudentLock(settings):
        worker = CliProcess(settings, "worker", SHUTDOWN_GRACE_SECONDS="3")
        try:
            await wait_for(lambda: waiting_on_lock(session_factory), timeout=60, what="a summary batch to block")
            worker.signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(worker.wait, 30)
        finally:
            output = worker.stop()

    assert exit_code == 0, output
    assert "in-flight messages abandoned for redelivery" in output
    assert "CancelledError" not in output
    assert await audit(settings, session_factory, len(students)) == 0


async def test_abandoned_summary_batch_rolls_back(settings, session_factory, clean_db):
    [student] = await insert_students(session_factory, 1)
    refresher = SummaryRefresher(session_factory, coalesce_seconds=0, max_batch_messages=10)
    message_id = uuid.uuid4()
    envelope = Envelope(message_id=message_id, type=DashboardSummaryRefreshRequestedV1.TYPE, version=1,
                        occurred_at=datetime.now(UTC), correlation_id=message_id)
    request = DashboardSummaryRefreshRequestedV1(student_ids=[student], reason="test", requested_at=datetime.now(UTC))

    async with StudentLock(settings):
        submitted = asyncio.create_task(refresher.submit(envelope, request))
        await wait_for(lambda: waiting_on_lock(session_factory), timeout=15, what="the batch to block")
        await refresher.abandon()

    assert not submitted.done()
    submitted.cancel()
    assert await processed_requests(session_factory) == 0
    assert await scalar(session_factory, "SELECT count(*) FROM dashboard_summary") == 0
    # The pool still works after the cancelled transaction.
    assert await scalar(session_factory, "SELECT 1") == 1


async def test_relay_process_exits_zero_on_sigterm(settings, clean_db, topology):
    port = free_port()
    relay = CliProcess(settings, "relay", SHUTDOWN_GRACE_SECONDS="5", RELAY_INTERVAL_SECONDS="0.5",
                       RELAY_HEALTH_PORT=str(port))
    try:
        relay.wait_for_output("listening for outbox notifications")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_for(lambda: _ready(client), timeout=30, what="the relay's /health/ready to answer 200")
        relay.signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(relay.wait, 20)
    finally:
        output = relay.stop()

    assert exit_code == 0, output
    assert "relay shutdown started" in output
    assert "relay shutdown finished" in output
    assert "relay stopped" in output


async def test_relay_process_stops_during_broker_outage(settings, clean_db, topology):
    async with TcpProxy("127.0.0.1", _port(settings.rabbitmq_url)) as proxy:
        relay = CliProcess(settings, "relay", RABBITMQ_URL=_via(settings.rabbitmq_url, proxy.port),
                           SHUTDOWN_GRACE_SECONDS="5", PUBLISH_TIMEOUT_SECONDS="2")
        try:
            relay.wait_for_output("listening for outbox notifications")
            await proxy.cut()
            await asyncio.to_thread(relay.wait_for_output, "broker unavailable, retrying")
            relay.signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(relay.wait, 20)
        finally:
            output = relay.stop()

    assert exit_code == 0, output
    assert "relay shutdown finished" in output


async def test_relay_deadline_rolls_back_batch(settings, session_factory, clean_db, topology):
    async with session_factory() as session, session.begin():
        await session.execute(text(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, version, payload, headers) "
            "VALUES (gen_random_uuid(), 'student', 's', 'ANY_TYPE', 1, '{}', '{}')"
        ))
    publishing = asyncio.Event()

    class NeverConfirms:
        is_connected = True

        async def ready(self) -> None:
            pass

        async def publish(self, row: OutboxRow) -> None:
            publishing.set()
            await asyncio.Event().wait()

    relay = Relay(session_factory, NeverConfirms(), batch_size=10, interval_seconds=1)
    task = asyncio.create_task(relay.run())
    await asyncio.wait_for(publishing.wait(), 15)

    await _stop_relay(relay, task, grace_seconds=0.5)

    assert task.cancelled()
    assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE published_at IS NULL AND attempts = 0") == 1
    assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE last_error IS NOT NULL") == 0


async def test_scheduler_finishes_fire_in_progress(settings, session_factory, clean_db):
    await insert_students(session_factory, 3)
    stop = asyncio.Event()
    fire_at = datetime(2025, 3, 17, 5, 0, tzinfo=UTC)  # Monday 06:00 in Paris

    async with session_factory() as blocker, blocker.begin():
        await blocker.execute(text("LOCK TABLE students IN ACCESS EXCLUSIVE MODE"))
        scheduler = asyncio.create_task(
            run_scheduler(settings.model_copy(update={"shutdown_grace_seconds": 30.0}), session_factory, stop,
                          now_fn=lambda: fire_at + timedelta(minutes=1))
        )
        await wait_for(lambda: waiting_on_lock(session_factory), timeout=15, what="the fire to block")
        stop.set()
    await asyncio.wait_for(scheduler, 30)

    assert await _fire_statuses(session_factory) == ["enqueued"]
    assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE type = 'PARENT_REPORT_REQUESTED'") > 0


async def test_scheduler_rolls_back_fire_past_grace(settings, session_factory, clean_db):
    await insert_students(session_factory, 3)
    stop = asyncio.Event()
    fire_at = datetime(2025, 3, 17, 5, 0, tzinfo=UTC)

    async with session_factory() as blocker, blocker.begin():
        await blocker.execute(text("LOCK TABLE students IN ACCESS EXCLUSIVE MODE"))
        scheduler = asyncio.create_task(
            run_scheduler(settings.model_copy(update={"shutdown_grace_seconds": 0.5}), session_factory, stop,
                          now_fn=lambda: fire_at + timedelta(minutes=1))
        )
        await wait_for(lambda: waiting_on_lock(session_factory), timeout=15, what="the fire to block")
        stop.set()
        await asyncio.wait_for(scheduler, 30)

    assert await _fire_statuses(session_factory) == []
    assert await scalar(session_factory, "SELECT count(*) FROM outbox") == 0


async def test_scheduler_process_exits_zero_on_sigterm(settings, clean_db):
    scheduler = CliProcess(settings, "scheduler", SHUTDOWN_GRACE_SECONDS="5")
    try:
        scheduler.wait_for_output("scheduler starting")
        scheduler.signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(scheduler.wait, 20)
    finally:
        output = scheduler.stop()

    assert exit_code == 0, output
    assert "scheduler stopped" in output


async def test_api_process_graceful_on_sigterm(settings, clean_db):
    port = free_port()
    api = CliProcess(settings, "api", "--port", str(port), SHUTDOWN_GRACE_SECONDS="5")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_for(lambda: _answers(client), timeout=60, what="the API to answer")
        api.signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(api.wait, 20)
    finally:
        output = api.stop()

    # uvicorn raises the signal again once its shutdown is done, so the process ends by SIGTERM.
    assert exit_code == -signal.SIGTERM, output
    assert "api shutdown started" in output
    assert "api shutdown finished" in output


async def _some_processed(session_factory) -> bool:
    return await processed_requests(session_factory) > 0


async def _fire_statuses(session_factory) -> list[str]:
    async with session_factory() as session:
        rows = await session.execute(text("SELECT status FROM schedule_fires WHERE schedule = :schedule"),
                                     {"schedule": REPORT_SCHEDULE})
        return list(rows.scalars())


async def _ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/health/ready")).status_code == 200
    except httpx.TransportError:
        return False


async def _answers(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/health/live")).status_code == 200
    except httpx.TransportError:
        return False
