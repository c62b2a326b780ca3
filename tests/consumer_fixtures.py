"""Fixtures and helpers for the consumer failure and dead-letter tests.

The run's settings keep the production retry delays (1, 10 and 60 s). These tests run the
worker with RETRY_DELAYS instead, and declare and delete the retry queues of those delays.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import aio_pika
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.consumers.app import Worker, build_worker
from dashboard_jobs.consumers.topology import Topology, build_topology, declare_topology
from dashboard_jobs.contracts.base import VERSION_HEADER
from dashboard_jobs.contracts.reports import ParentReportRequestedV1
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.settings import Settings

RETRY_DELAYS = [0.2, 0.5]
RETRY_LOG = "message handling failed, retrying after a delay"


class FailingSessions:
    """A session factory whose first ``failures`` calls raise the exception ``make_error`` returns."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        failures: int,
        make_error: Callable[[], BaseException],
    ) -> None:
        self._sessions = sessions
        self._failures = failures
        self._make_error = make_error
        self.calls = 0

    def __call__(self) -> AsyncSession:
        self.calls += 1
        if self.calls <= self._failures:
            raise self._make_error()
        return self._sessions()


@pytest.fixture
def retry_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"consumer_retry_delays_seconds": RETRY_DELAYS})


@pytest.fixture
async def retry_topology(retry_settings: Settings, topology: Topology) -> AsyncIterator[Topology]:
    """Declare the topology with the short retry queues, empty; delete those queues afterwards."""
    fast = build_topology(retry_settings)
    connection = await aio_pika.connect(retry_settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, fast)
        for name in fast.queue_names():
            await (await channel.get_queue(name)).purge()
    finally:
        await connection.close()

    yield fast

    connection = await aio_pika.connect(retry_settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        for spec in fast.consumer_queues:
            for retry in spec.retry_queues:
                await channel.queue_delete(retry.name)
    finally:
        await connection.close()


@pytest.fixture
async def start_worker(
    retry_settings: Settings, retry_topology: Topology
) -> AsyncIterator[Callable[[async_sessionmaker[AsyncSession]], Awaitable[Worker]]]:
    """Return a function that starts a worker with the short retry delays; stop them all afterwards."""
    workers: list[Worker] = []

    async def start(session_factory: async_sessionmaker[AsyncSession]) -> Worker:
        worker = build_worker(retry_settings, session_factory)
        await worker.broker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.broker.stop()


@pytest.fixture
async def amqp(settings: Settings, topology: Topology) -> AsyncIterator[tuple[aio_pika.abc.AbstractChannel, aio_pika.abc.AbstractExchange]]:
    connection = await aio_pika.connect(settings.rabbitmq_url)
    channel = await connection.channel()
    exchange = await channel.get_exchange(topology.exchange)
    yield channel, exchange
    await connection.close()


@pytest.fixture
async def running_worker(settings: Settings, session_factory: async_sessionmaker[AsyncSession], topology: Topology) -> AsyncIterator[Worker]:
    """A worker consuming the run's queues for the duration of the test."""
    worker = build_worker(settings, session_factory)
    await worker.broker.start()
    yield worker
    await worker.broker.stop()


def summary_request(
    student_ids, message_id=None, body=None, correlation_id=None, version=1, event_type=None
) -> aio_pika.Message:
    payload = body if body is not None else json.dumps({
        "student_ids": [str(s) for s in student_ids],
        "reason": "test",
        "requested_at": datetime.now(UTC).isoformat(),
    }).encode()
    return aio_pika.Message(
        body=payload,
        message_id=str(message_id or uuid.uuid4()),
        type=event_type or DashboardSummaryRefreshRequestedV1.TYPE,
        correlation_id=str(correlation_id) if correlation_id else None,
        headers={VERSION_HEADER: version},
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def report_request(student_id, message_id=None, body=None) -> aio_pika.Message:
    payload = body if body is not None else json.dumps({
        "student_id": str(student_id),
        "period": "2025-01",
        "regenerate": False,
        "requested_by": {"schedule": "test"},
        "batch_id": str(uuid.uuid4()),
    }).encode()
    return aio_pika.Message(
        body=payload,
        message_id=str(message_id or uuid.uuid4()),
        type=ParentReportRequestedV1.TYPE,
        headers={VERSION_HEADER: 1},
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def queue_depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    declared = await channel.declare_queue(name, passive=True)
    return declared.declaration_result.message_count or 0


async def take_all(channel: aio_pika.abc.AbstractChannel, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Remove and return every message of queue ``name``."""
    queue = await channel.get_queue(name)
    messages = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        messages.append(message)
    return messages


def retry_records(caplog: pytest.LogCaptureFixture, message_id: object) -> list:
    return [
        record for record in caplog.records
        if record.getMessage() == RETRY_LOG and getattr(record, "message_id", None) == str(message_id)
    ]
