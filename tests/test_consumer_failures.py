"""The consumers' failure policy on the real RabbitMQ and PostgreSQL: retries, dead letters, poison messages."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import datetime

import pytest
from aiormq.exceptions import AMQPConnectionError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard_jobs.consumers import failures
from dashboard_jobs.consumers import reports as report_consumer
from dashboard_jobs.consumers import summary as summary_consumer
from dashboard_jobs.consumers.failures import MAX_ERROR_TEXT_LENGTH, FailureKind, classify
from dashboard_jobs.consumers.messages import PermanentMessageError
from dashboard_jobs.consumers.topology import REPORT_CONSUMER, SUMMARY_CONSUMER
from dashboard_jobs.contracts.reports import ParentReportRequestedV1
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from tests.consumer_fixtures import (  # noqa: F401 - fixtures
    RETRY_DELAYS,
    FailingSessions,
    amqp,
    queue_depth,
    report_request,
    retry_records,
    retry_settings,
    retry_topology,
    start_worker,
    summary_request,
    take_all,
)
from tests.helpers import insert_students, scalar, wait_for
from tests.report_data import build_report_school

SUMMARY_KEY = DashboardSummaryRefreshRequestedV1.TYPE
REPORT_KEY = ParentReportRequestedV1.TYPE
SUMMARY_COMPLETED = "SELECT count(*) FROM outbox WHERE type = 'DASHBOARD_SUMMARY_REFRESH_COMPLETED'"
REPORT_COMPLETED = "SELECT count(*) FROM outbox WHERE type = 'PARENT_REPORT_COMPLETED'"


@pytest.fixture(autouse=True)
def capture_failure_logs(caplog):
    caplog.set_level(logging.INFO, logger="dashboard_jobs.consumers")


def database_down() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused: the database is restarting"))


async def statement_timeout_error(engine: AsyncEngine) -> DBAPIError:
    """Return the error PostgreSQL raises when a statement exceeds statement_timeout (57014)."""
    async with engine.connect() as connection:
        await connection.execute(text("SET statement_timeout = 1"))
        try:
            await connection.execute(text("SELECT pg_sleep(1)"))
        except DBAPIError as error:
            return error
    raise AssertionError("pg_sleep(1) finished within a 1 ms statement_timeout")


async def inbox_has(session_factory, message_id) -> bool:
    return await scalar(session_factory, "SELECT count(*) FROM inbox WHERE message_id = :m", m=message_id) == 1


# Classification


class DriverError(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermanentMessageError("message has no type property"), FailureKind.PERMANENT),
        (ConnectionRefusedError("refused"), FailureKind.TRANSIENT),
        (TimeoutError("no answer"), FailureKind.TRANSIENT),
        (OSError("network unreachable"), FailureKind.TRANSIENT),
        (AMQPConnectionError("connection closed"), FailureKind.TRANSIENT),
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), FailureKind.TRANSIENT),
        (DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True), FailureKind.TRANSIENT),
        (DBAPIError("UPDATE", {}, DriverError("could not serialize access", "40001")), FailureKind.TRANSIENT),
        (DBAPIError("UPDATE", {}, DriverError("deadlock detected", "40P01")), FailureKind.TRANSIENT),
        (DBAPIError("SELECT", {}, DriverError("could not obtain lock", "55P03")), FailureKind.TRANSIENT),
        (DBAPIError("SELECT", {}, DriverError("statement timeout", "57014")), FailureKind.TRANSIENT),
        (DBAPIError("SELECT", {}, DriverError("terminating connection", "57P01")), FailureKind.TRANSIENT),
        (DBAPIError("SELECT", {}, DriverError("the database system is starting up", "57P03")), FailureKind.TRANSIENT),
        (DBAPIError("SELECT", {}, DriverError("connection failure", "08006")), FailureKind.TRANSIENT),
        (IntegrityError("INSERT", {}, DriverError("duplicate key", "23505")), FailureKind.UNEXPECTED),
        (KeyError("student_ids"), FailureKind.UNEXPECTED),
        (ValueError("bug"), FailureKind.UNEXPECTED),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_classify_error(error, expected):
    assert classify(error) is expected


async def test_classify_real_statement_timeout(engine):
    assert classify(await statement_timeout_error(engine)) is FailureKind.TRANSIENT


# Retry queues on this broker


async def test_retry_queue_returns_message_after_its_delay(retry_topology, amqp):
    channel, _ = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    [short_retry, _] = spec.retry_queues
    message = summary_request([uuid.uuid4()])

    await channel.default_exchange.publish(message, routing_key=short_retry.name)

    async def back_in_queue() -> bool:
        return await queue_depth(channel, spec.name) == 1
    await wait_for(back_in_queue, what=f"the message back in {spec.name} after {short_retry.delay_seconds} s")
    [returned] = await take_all(channel, spec.name)
    assert returned.message_id == message.message_id
    assert returned.headers["x-death"][0]["reason"] == "expired"
    assert returned.headers["x-death"][0]["queue"] == short_retry.name
    assert short_retry.arguments["x-dead-letter-strategy"] == "at-least-once"
    assert await queue_depth(channel, short_retry.name) == 0


# Transient failures


async def test_transient_failure_retried_with_delays_then_succeeds(session_factory, clean_db, amqp, start_worker, caplog):
    _, exchange = amqp
    [student] = await insert_students(session_factory, 1)
    sessions = FailingSessions(session_factory, failures=2, make_error=database_down)
    await start_worker(sessions)
    message_id = uuid.uuid4()

    await exchange.publish(summary_request([student], message_id), routing_key=SUMMARY_KEY)
    await wait_for(lambda: inbox_has(session_factory, message_id), what="the request processed after two retries")

    retries = retry_records(caplog, message_id)
    assert [(record.attempt, record.delay_seconds) for record in retries] == [(1, RETRY_DELAYS[0]), (2, RETRY_DELAYS[1])]
    assert sessions.calls == 3
    assert await scalar(session_factory, SUMMARY_COMPLETED) == 1
    assert await scalar(session_factory, "SELECT count(*) FROM dashboard_summary WHERE student_id = :s", s=student) == 1
    completed = await scalar(
        session_factory, "SELECT payload FROM outbox WHERE type = 'DASHBOARD_SUMMARY_REFRESH_COMPLETED'"
    )
    assert completed["request_message_ids"] == [str(message_id)]


async def test_statement_timeout_retried_for_report(session_factory, engine, clean_db, amqp, start_worker, caplog, retry_topology):
    channel, exchange = amqp
    data = await build_report_school(session_factory)
    timeout_error = await statement_timeout_error(engine)
    sessions = FailingSessions(session_factory, failures=1, make_error=lambda: timeout_error)
    await start_worker(sessions)
    message_id = uuid.uuid4()

    await exchange.publish(report_request(data.lea, message_id), routing_key=REPORT_KEY)
    await wait_for(lambda: inbox_has(session_factory, message_id), what="the report request processed after a retry")

    assert [record.attempt for record in retry_records(caplog, message_id)] == [1]
    assert await scalar(session_factory, "SELECT count(*) FROM reports WHERE student_id = :s", s=data.lea) == 1
    assert await scalar(session_factory, REPORT_COMPLETED) == 1
    assert await queue_depth(channel, retry_topology.queue(REPORT_CONSUMER).dead_letter_queue) == 0


async def test_exhausted_retries_dead_letter_with_headers(session_factory, clean_db, amqp, start_worker, retry_topology, caplog):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    [student] = await insert_students(session_factory, 1)
    long_message = "database is restarting " * 300

    def failure() -> OperationalError:
        return OperationalError("SELECT 1", {}, ConnectionRefusedError(long_message))
    sessions = FailingSessions(session_factory, failures=1_000, make_error=failure)
    await start_worker(sessions)
    message_id, correlation_id = uuid.uuid4(), uuid.uuid4()
    original = summary_request([student], message_id, correlation_id=correlation_id)

    await exchange.publish(original, routing_key=SUMMARY_KEY)

    async def dead_lettered() -> bool:
        return await queue_depth(channel, spec.dead_letter_queue) == 1
    await wait_for(dead_lettered, what="the request in the dead-letter queue")
    [dead] = await take_all(channel, spec.dead_letter_queue)

    assert dead.body == original.body
    assert dead.message_id == str(message_id)
    assert dead.correlation_id == str(correlation_id)
    assert dead.type == SUMMARY_KEY
    headers = dead.headers
    assert headers["x-contract-version"] == 1
    assert headers["x-dead-letter-reason"] == "retries_exhausted"
    assert headers["x-exception-type"] == "sqlalchemy.exc.OperationalError"
    assert "database is restarting" in headers["x-exception-message"]
    assert len(headers["x-exception-message"]) <= MAX_ERROR_TEXT_LENGTH
    assert headers["x-attempts"] == len(RETRY_DELAYS) + 1
    assert headers["x-original-queue"] == spec.name
    assert headers["x-original-exchange"] == retry_topology.exchange
    assert headers["x-original-routing-key"] == SUMMARY_KEY
    assert datetime.fromisoformat(headers["x-dead-lettered-at"]).tzinfo is not None
    assert "x-death" not in headers
    assert sessions.calls == len(RETRY_DELAYS) + 1
    assert [record.attempt for record in retry_records(caplog, message_id)] == [1, 2]
    assert await scalar(session_factory, "SELECT count(*) FROM inbox") == 0
    assert await scalar(session_factory, SUMMARY_COMPLETED) == 0
    for retry in spec.retry_queues:
        assert await queue_depth(channel, retry.name) == 0
    assert await queue_depth(channel, spec.name) == 0


# Permanent failures


@pytest.mark.parametrize(
    ("consumer", "make_message", "routing_key"),
    [
        (SUMMARY_CONSUMER, lambda: summary_request([], body=b"{not json"), SUMMARY_KEY),
        (REPORT_CONSUMER, lambda: report_request(None, body=b"{not json"), REPORT_KEY),
        (REPORT_CONSUMER, lambda: report_request(None, body=json.dumps({"student_id": "x"}).encode()), REPORT_KEY),
    ],
    ids=["summary not JSON", "report not JSON", "report invalid body"],
)
async def test_permanent_error_dead_letters_without_retry(
    session_factory, clean_db, amqp, start_worker, retry_topology, caplog, consumer, make_message, routing_key
):
    channel, exchange = amqp
    spec = retry_topology.queue(consumer)
    await start_worker(session_factory)
    bad = make_message()

    await exchange.publish(bad, routing_key=routing_key)

    async def dead_lettered() -> bool:
        return await queue_depth(channel, spec.dead_letter_queue) == 1
    await wait_for(dead_lettered, what="the invalid message in the dead-letter queue")
    [dead] = await take_all(channel, spec.dead_letter_queue)
    assert dead.message_id == bad.message_id
    assert dead.body == bad.body
    assert dead.headers["x-dead-letter-reason"] == "permanent"
    assert dead.headers["x-exception-type"] == "dashboard_jobs.consumers.messages.PermanentMessageError"
    assert "invalid body" in dead.headers["x-exception-message"]
    assert dead.headers["x-attempts"] == 1
    assert retry_records(caplog, bad.message_id) == []
    assert await queue_depth(channel, spec.name) == 0


# Poison messages


async def test_summary_poison_message_does_not_hold_up_others(
    session_factory, clean_db, amqp, start_worker, retry_topology, caplog, monkeypatch
):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    first, poison_student, last = await insert_students(session_factory, 3)
    refresh = summary_consumer.refresh_summaries

    async def refresh_unless_poisoned(session, student_ids):
        if poison_student in student_ids:
            raise RuntimeError(f"cannot summarise student {poison_student}")
        return await refresh(session, student_ids)
    monkeypatch.setattr(summary_consumer, "refresh_summaries", refresh_unless_poisoned)
    await start_worker(session_factory)
    before, poison, after = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    await exchange.publish(summary_request([first], before), routing_key=SUMMARY_KEY)
    await exchange.publish(summary_request([poison_student], poison), routing_key=SUMMARY_KEY)
    await exchange.publish(summary_request([last], after), routing_key=SUMMARY_KEY)

    async def poison_dead_lettered() -> bool:
        return await queue_depth(channel, spec.dead_letter_queue) == 1
    await wait_for(poison_dead_lettered, what="the poison message in the dead-letter queue")
    assert await inbox_has(session_factory, before)
    assert await inbox_has(session_factory, after)
    assert not await inbox_has(session_factory, poison)
    assert retry_records(caplog, before) == []
    assert retry_records(caplog, after) == []
    assert [record.attempt for record in retry_records(caplog, poison)] == [1, 2]
    [dead] = await take_all(channel, spec.dead_letter_queue)
    assert dead.message_id == str(poison)
    assert dead.headers["x-dead-letter-reason"] == "retries_exhausted"
    assert dead.headers["x-exception-type"] == "RuntimeError"
    assert await scalar(session_factory, "SELECT count(*) FROM dashboard_summary") == 2


async def test_report_poison_message_does_not_hold_up_others(
    session_factory, clean_db, amqp, start_worker, retry_topology, caplog, monkeypatch
):
    channel, exchange = amqp
    spec = retry_topology.queue(REPORT_CONSUMER)
    data = await build_report_school(session_factory)
    poison_student = uuid.uuid4()
    produce = report_consumer.produce_reports

    async def produce_unless_poisoned(session, student_ids, *args, **kwargs):
        if poison_student in student_ids:
            raise RuntimeError(f"cannot render the report of {poison_student}")
        return await produce(session, student_ids, *args, **kwargs)
    monkeypatch.setattr(report_consumer, "produce_reports", produce_unless_poisoned)
    await start_worker(session_factory)
    before, poison, after = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    await exchange.publish(report_request(data.lea, before), routing_key=REPORT_KEY)
    await exchange.publish(report_request(poison_student, poison), routing_key=REPORT_KEY)
    await exchange.publish(report_request(data.hugo, after), routing_key=REPORT_KEY)

    async def poison_dead_lettered() -> bool:
        return await queue_depth(channel, spec.dead_letter_queue) == 1
    await wait_for(poison_dead_lettered, what="the poison message in the dead-letter queue")
    assert await inbox_has(session_factory, before)
    assert await inbox_has(session_factory, after)
    assert retry_records(caplog, before) == []
    assert retry_records(caplog, after) == []
    assert [record.attempt for record in retry_records(caplog, poison)] == [1, 2]
    [dead] = await take_all(channel, spec.dead_letter_queue)
    assert dead.message_id == str(poison)
    assert dead.headers["x-attempts"] == len(RETRY_DELAYS) + 1
    assert await scalar(session_factory, REPORT_COMPLETED) == 2


async def test_failed_batch_retries_each_message(
    session_factory, clean_db, amqp, start_worker, retry_topology, caplog
):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    students = await insert_students(session_factory, 3)
    sessions = FailingSessions(session_factory, failures=1, make_error=database_down)
    # The first batch fails; the messages retry on their own schedule and all succeed.
    await start_worker(sessions)
    message_ids = [uuid.uuid4() for _ in students]

    for student, message_id in zip(students, message_ids, strict=True):
        await exchange.publish(summary_request([student], message_id), routing_key=SUMMARY_KEY)

    async def all_processed() -> bool:
        results = await asyncio.gather(*(inbox_has(session_factory, m) for m in message_ids))
        return all(results)
    await wait_for(all_processed, what="every request of the failed batch")
    retried = [message_id for message_id in message_ids if retry_records(caplog, message_id)]
    assert retried
    for message_id in retried:
        assert [record.attempt for record in retry_records(caplog, message_id)] == [1]
    covered = await scalar(
        session_factory,
        "SELECT count(*) FROM outbox o, jsonb_array_elements_text(o.payload->'request_message_ids') "
        "WHERE o.type = 'DASHBOARD_SUMMARY_REFRESH_COMPLETED'",
    )
    assert covered == len(message_ids)
    assert await queue_depth(channel, spec.dead_letter_queue) == 0


async def test_dead_letter_records_default_exchange_origin(session_factory, clean_db, amqp, start_worker, retry_topology):
    # A message published straight to the queue records the default exchange as its origin,
    # so a replay sends it back to the same queue.
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    [student] = await insert_students(session_factory, 1)
    await start_worker(session_factory)
    wrong = report_request(student)
    good = uuid.uuid4()

    await channel.default_exchange.publish(wrong, routing_key=spec.name)
    await exchange.publish(summary_request([student], good), routing_key=SUMMARY_KEY)

    await wait_for(lambda: inbox_has(session_factory, good), what="the valid request after the wrong one")
    async def dead_lettered() -> bool:
        return await queue_depth(channel, spec.dead_letter_queue) == 1
    await wait_for(dead_lettered, what="the wrong message in the dead-letter queue")
    [dead] = await take_all(channel, spec.dead_letter_queue)
    assert dead.headers["x-original-exchange"] == ""
    assert dead.headers["x-original-routing-key"] == spec.name


async def test_unconfirmed_retry_copy_keeps_original(
    session_factory, clean_db, amqp, start_worker, retry_topology, caplog, monkeypatch
):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    [student] = await insert_students(session_factory, 1)
    monkeypatch.setattr(failures, "PUBLISH_FAILURE_PAUSE_SECONDS", 0.1)
    sessions = FailingSessions(session_factory, failures=1, make_error=database_down)
    await start_worker(sessions)
    # Without its first retry queue, the broker returns the retry copy as unroutable.
    await channel.queue_delete(spec.retry_queues[0].name)
    message_id = uuid.uuid4()

    await exchange.publish(summary_request([student], message_id), routing_key=SUMMARY_KEY)
    await wait_for(lambda: inbox_has(session_factory, message_id), what="the request processed after its redelivery")

    copy_failures = [
        record for record in caplog.records
        if record.levelno == logging.ERROR and getattr(record, "message_id", None) == str(message_id)
    ]
    assert len(copy_failures) == 1
    assert "CopyNotConfirmedError" in copy_failures[0].publish_error
    assert retry_records(caplog, message_id) == []
    assert sessions.calls == 2
    assert await scalar(session_factory, SUMMARY_COMPLETED) == 1
    assert await queue_depth(channel, spec.dead_letter_queue) == 0
