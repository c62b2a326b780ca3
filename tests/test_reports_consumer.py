"""The report consumer on the real RabbitMQ: end to end through the relay, duplicates, failures, rejections."""

from __future__ import annotations

import json
import uuid

import aio_pika
import pytest
from sqlalchemy import text

from dashboard_jobs.consumers.reports import ReportRequestHandler
from dashboard_jobs.consumers.topology import REPORT_CONSUMER
from dashboard_jobs.contracts.base import Envelope, VERSION_HEADER
from dashboard_jobs.contracts.reports import ParentReportRequestedV1, RequestedBySchedule
from dashboard_jobs.domain.periods import Period
from dashboard_jobs.outbox.publisher import ConfirmingPublisher
from dashboard_jobs.outbox.relay import Relay
from dashboard_jobs.producers.reports import enqueue_report_requests, wait_for_batch
from tests.helpers import scalar, wait_for
from tests.report_data import INVALID_PERIODS, build_report_school, utc
from tests.consumer_fixtures import amqp, running_worker  # noqa: F401 - fixtures

COMPLETED_PAYLOADS = "SELECT payload FROM outbox WHERE type = 'PARENT_REPORT_COMPLETED' ORDER BY seq"


@pytest.fixture
async def data(session_factory, clean_db):
    return await build_report_school(session_factory)


def request_body(student_id, period="2025-01", regenerate=False, batch_id=None) -> dict:
    return {
        "student_id": str(student_id),
        "period": period,
        "regenerate": regenerate,
        "requested_by": {"schedule": "test"},
        "batch_id": str(batch_id or uuid.uuid4()),
    }


def request_message(body: dict, message_id=None) -> aio_pika.Message:
    return aio_pika.Message(
        body=json.dumps(body).encode(),
        message_id=str(message_id or uuid.uuid4()),
        type=ParentReportRequestedV1.TYPE,
        headers={VERSION_HEADER: 1},
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def completed_payloads(session_factory) -> list[dict]:
    async with session_factory() as session:
        return list((await session.execute(text(COMPLETED_PAYLOADS))).scalars())


async def queue_depth(channel, name: str) -> int:
    declared = await channel.declare_queue(name, passive=True)
    return declared.declaration_result.message_count


async def test_request_travels_through_relay_to_report(settings, session_factory, data, topology, running_worker):
    async with session_factory() as session, session.begin():
        batch_id = await enqueue_report_requests(
            session, [data.lea, data.hugo], Period(2025, 1), False, RequestedBySchedule(schedule="test")
        )
    publisher = ConfirmingPublisher(settings.rabbitmq_url, topology, timeout_seconds=10)
    await publisher.connect()
    try:
        relay = Relay(session_factory, publisher, batch_size=10, interval_seconds=1)
        assert await relay.drain() == 2

        batch = await wait_for_batch(session_factory, batch_id, timeout_seconds=15)
        assert batch is not None and batch.complete
        # The COMPLETED events are routable: the relay publishes them with mandatory.
        assert await relay.drain() == 2
    finally:
        await publisher.close()

    assert await scalar(session_factory, "SELECT count(*) FROM reports WHERE period = '2025-01'") == 2
    assert await scalar(session_factory, "SELECT count(*) FROM inbox WHERE consumer = 'parent_report'") == 2
    assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    payloads = await completed_payloads(session_factory)
    assert {p["student_id"] for p in payloads} == {str(data.lea), str(data.hugo)}
    assert {p["status"] for p in payloads} == {"generated"}
    assert {p["batch_id"] for p in payloads} == {str(batch_id)}
    lea_kpis = await scalar(session_factory, "SELECT kpis_json FROM reports WHERE student_id = :s", s=data.lea)
    assert lea_kpis["progress"]["average"] == 14.5


async def test_redelivered_request_is_skipped(session_factory, data, amqp, running_worker):
    _, exchange = amqp
    message_id = uuid.uuid4()
    body = request_body(data.lea, regenerate=True)

    await exchange.publish(request_message(body, message_id), routing_key=ParentReportRequestedV1.TYPE)
    await wait_for(lambda: _completed_count_is(session_factory, 1), what="the first COMPLETED row")
    first = await scalar(session_factory, "SELECT generated_at FROM reports WHERE student_id = :s", s=data.lea)

    await exchange.publish(request_message(body, message_id), routing_key=ParentReportRequestedV1.TYPE)
    marker = request_body(data.hugo)
    await exchange.publish(request_message(marker), routing_key=ParentReportRequestedV1.TYPE)
    await wait_for(lambda: _completed_count_is(session_factory, 2), what="the marker's COMPLETED row")

    assert await scalar(session_factory, "SELECT count(*) FROM inbox WHERE consumer = 'parent_report'") == 2
    assert await scalar(session_factory, "SELECT generated_at FROM reports WHERE student_id = :s", s=data.lea) == first


async def test_unknown_student_completes_as_failed(session_factory, data, amqp, topology, running_worker):
    channel, exchange = amqp
    unknown = uuid.uuid4()
    await exchange.publish(request_message(request_body(unknown)), routing_key=ParentReportRequestedV1.TYPE)
    await wait_for(lambda: _completed_count_is(session_factory, 1), what="the failed COMPLETED row")

    [payload] = await completed_payloads(session_factory)
    assert payload["status"] == "failed"
    assert payload["reason"] == "student_not_found"
    assert payload["report_id"] is None
    spec = topology.queue(REPORT_CONSUMER)
    assert await queue_depth(channel, spec.name) == 0
    assert await queue_depth(channel, spec.dead_letter_queue) == 0


async def test_invalid_periods_are_dead_lettered(session_factory, data, amqp, topology, running_worker):
    channel, exchange = amqp
    spec = topology.queue(REPORT_CONSUMER)
    for value in INVALID_PERIODS:
        await exchange.publish(request_message(request_body(data.lea, period=value)), routing_key=ParentReportRequestedV1.TYPE)

    async def all_dead_lettered() -> bool:
        return await queue_depth(channel, spec.dead_letter_queue) == len(INVALID_PERIODS)
    await wait_for(all_dead_lettered, what="every invalid period in the dead-letter queue")

    assert await scalar(session_factory, "SELECT count(*) FROM reports") == 0
    assert await completed_payloads(session_factory) == []
    dead = await (await channel.get_queue(spec.dead_letter_queue)).get(no_ack=True)
    assert dead.headers["x-dead-letter-reason"] == "permanent"
    assert dead.headers["x-original-queue"] == spec.name


async def test_future_period_completes_as_failed(settings, session_factory, data):
    handler = ReportRequestHandler(session_factory, settings, now_fn=lambda: utc("2025-03-17T12:00Z"))
    message_id = uuid.uuid4()
    envelope = Envelope(
        message_id=message_id, type=ParentReportRequestedV1.TYPE, version=1,
        occurred_at=utc("2025-03-17T12:00Z"), correlation_id=message_id,
    )
    request = ParentReportRequestedV1.model_validate(request_body(data.lea, period="2025-04"))

    outcome = await handler.handle(envelope, request)
    duplicate = await handler.handle(envelope, request)

    assert outcome.status == "failed"
    assert outcome.reason == "period_in_future"
    assert duplicate is None
    [payload] = await completed_payloads(session_factory)
    assert payload["status"] == "failed"
    assert await scalar(session_factory, "SELECT count(*) FROM reports") == 0


async def _completed_count_is(session_factory, expected: int) -> bool:
    return await scalar(session_factory, "SELECT count(*) FROM outbox WHERE type = 'PARENT_REPORT_COMPLETED'") == expected
