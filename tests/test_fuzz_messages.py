"""Malformed messages on the real RabbitMQ: each is dead-lettered with a reason, and the consumer keeps working.

Hypothesis builds messages that no relay would publish. Their bodies are not JSON, are
JSON of the wrong shape or types, or weigh several megabytes. Their contract version is
unknown or not an integer, their type or version header is missing, their content type is
not JSON, their message id is not a UUID, or their event type belongs to another queue.
Each one is published straight to a consumer's queue while a worker runs, followed by a
valid request. The valid request must be processed (its inbox row appears), and the
malformed one must be in the queue's dead-letter queue, unchanged, with headers giving
the reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dashboard_jobs.consumers.app import build_worker
from dashboard_jobs.consumers.reports import CONSUMER_NAME as REPORT_INBOX_CONSUMER
from dashboard_jobs.consumers.summary import CONSUMER_NAME as SUMMARY_INBOX_CONSUMER
from dashboard_jobs.consumers.topology import REPORT_CONSUMER, SUMMARY_CONSUMER
from dashboard_jobs.contracts.base import VERSION_HEADER, Event
from dashboard_jobs.contracts.reports import ParentReportRequestedV1
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from tests.helpers import insert_students, scalar, wait_for

PERMANENT_ERROR = "dashboard_jobs.consumers.messages.PermanentMessageError"
MEGABYTE = 1024 * 1024

# Examples for each consumer and defect. Each example publishes two messages and waits for
# both outcomes (about 0.1 s, several MB bodies a little more), so the whole file stays
# well under a minute.
MAX_EXAMPLES = 8


@dataclass(frozen=True)
class ConsumerCase:
    """A consumer queue, its contract, and how to build a valid request body for a student."""

    queue_suffix: str
    inbox_consumer: str
    contract: type[Event]
    valid_body: Callable[[uuid.UUID], dict[str, Any]]


def summary_body(student_id: uuid.UUID) -> dict[str, Any]:
    return {"student_ids": [str(student_id)], "reason": "fuzz", "requested_at": datetime.now(UTC).isoformat()}


def report_body(student_id: uuid.UUID) -> dict[str, Any]:
    return {
        "student_id": str(student_id),
        "period": "2025-01",
        "regenerate": False,
        "requested_by": {"schedule": "fuzz"},
        "batch_id": str(uuid.uuid4()),
    }


CONSUMERS = {
    "summary": ConsumerCase(SUMMARY_CONSUMER, SUMMARY_INBOX_CONSUMER, DashboardSummaryRefreshRequestedV1, summary_body),
    "parent_report": ConsumerCase(REPORT_CONSUMER, REPORT_INBOX_CONSUMER, ParentReportRequestedV1, report_body),
}


@dataclass(frozen=True)
class Malformed:
    """What is wrong with a message, and the AMQP properties and body it is published with."""

    defect: str
    body: bytes
    message_id: str
    type: str | None = None
    headers: dict[str, Any] | None = None
    content_type: str | None = "application/json"

    def to_message(self) -> aio_pika.Message:
        return aio_pika.Message(
            body=self.body,
            message_id=self.message_id,
            type=self.type,
            headers=self.headers,
            content_type=self.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )


def valid_properties(contract: type[Event]) -> dict[str, Any]:
    return {"message_id": str(uuid.uuid4()), "type": contract.TYPE, "headers": {VERSION_HEADER: contract.VERSION}}


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def is_valid_body(contract: type[Event], body: bytes) -> bool:
    try:
        contract.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        return False
    return True


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def not_json_bodies() -> st.SearchStrategy[bytes]:
    def fails_to_parse(body: bytes) -> bool:
        try:
            json.loads(body)
        except ValueError:
            return True
        return False

    return st.binary(max_size=200).filter(fails_to_parse)


def wrong_shape_bodies(case: ConsumerCase, student_id: uuid.UUID) -> st.SearchStrategy[bytes]:
    """JSON documents the contract rejects: any value, or the valid body with one member changed, removed or added."""
    valid = case.valid_body(student_id)
    any_document = json_values.map(encode)
    one_member_changed = st.tuples(st.sampled_from(sorted(valid)), json_values).map(
        lambda change: encode({**valid, change[0]: change[1]})
    )
    one_member_missing = st.sampled_from(sorted(valid)).map(
        lambda name: encode({key: value for key, value in valid.items() if key != name})
    )
    unknown_member = st.text(min_size=1, max_size=12).filter(lambda name: name not in valid).map(
        lambda name: encode({**valid, name: 1})
    )
    bodies = st.one_of(any_document, one_member_changed, one_member_missing, unknown_member)
    return bodies.filter(lambda body: not is_valid_body(case.contract, body))


def huge_bodies(case: ConsumerCase, student_id: uuid.UUID) -> st.SearchStrategy[bytes]:
    """Bodies of 1 to 6 MB: filler that is not JSON, or the valid body with an oversized member."""
    sizes = st.integers(min_value=1 * MEGABYTE, max_value=6 * MEGABYTE)
    filler = sizes.map(lambda size: b"x" * size)
    member = sorted(case.valid_body(student_id))[-1]
    oversized_member = sizes.map(lambda size: encode({**case.valid_body(student_id), member: "é" * (size // 2)}))
    return st.one_of(filler, oversized_member)


DEFECTS = [
    "not JSON",
    "wrong shape or types",
    "huge body",
    "unknown version",
    "mistyped version",
    "missing properties",
    "wrong content type",
    "message id not a UUID",
    "type of another queue",
]


@st.composite
def malformed_messages(draw: st.DrawFn, case: ConsumerCase, student_id: uuid.UUID, defect: str) -> Malformed:
    contract = case.contract
    valid_body = encode(case.valid_body(student_id))
    properties = valid_properties(contract)

    if defect == "not JSON":
        return Malformed(defect, draw(not_json_bodies()), **properties)
    if defect == "wrong shape or types":
        return Malformed(defect, draw(wrong_shape_bodies(case, student_id)), **properties)
    if defect == "huge body":
        return Malformed(defect, draw(huge_bodies(case, student_id)), **properties)
    if defect == "unknown version":
        version = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1).filter(lambda v: v != contract.VERSION))
        return Malformed(defect, valid_body, **{**properties, "headers": {VERSION_HEADER: version}})
    if defect == "mistyped version":
        # Only values an AMQP header table carries: RabbitMQ closes the connection on an
        # infinite float, and the client cannot encode bytes or doubles beyond 32 bits.
        version = draw(st.one_of(
            st.text(max_size=5), st.booleans(), st.floats(width=32, allow_nan=False, allow_infinity=False)
        ))
        return Malformed(defect, valid_body, **{**properties, "headers": {VERSION_HEADER: version}})
    if defect == "missing properties":
        # Not message_id: aiormq gives every message published without one a random id.
        missing = draw(st.sets(st.sampled_from(["type", "headers"]), min_size=1))
        return Malformed(defect, valid_body, **{**properties, **dict.fromkeys(missing)})
    if defect == "wrong content type":
        content_type = draw(st.sampled_from(["text/plain", "application/xml", "application/octet-stream", "application/x-www-form-urlencoded"]))
        body = draw(st.one_of(st.just(valid_body), not_json_bodies(), wrong_shape_bodies(case, student_id)))
        return Malformed(defect, body, content_type=content_type, **properties)
    if defect == "message id not a UUID":
        message_id = draw(st.text(min_size=1, max_size=60).filter(lambda text: not _is_uuid(text)))
        return Malformed(defect, valid_body, **{**properties, "message_id": message_id})
    other_types = [c.contract.TYPE for c in CONSUMERS.values() if c is not case] + ["SOMETHING_ELSE", ""]
    return Malformed(defect, valid_body, **{**properties, "type": draw(st.sampled_from(other_types))})


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@pytest.fixture
async def amqp_channel(settings, topology):
    connection = await aio_pika.connect(settings.rabbitmq_url)
    yield await connection.channel()
    await connection.close()


@pytest.fixture
async def running_worker(settings, session_factory, topology):
    worker = build_worker(settings, session_factory)
    await worker.broker.start()
    yield worker
    await worker.broker.stop()


@pytest.fixture
async def student_id(session_factory, clean_db) -> uuid.UUID:
    [student] = await insert_students(session_factory, 1)
    return student


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_malformed_message_dead_lettered(
    settings, session_factory, topology, amqp_channel, running_worker, student_id, consumer, defect, data
):
    case = CONSUMERS[consumer]
    queue = topology.queue(case.queue_suffix)
    malformed = data.draw(malformed_messages(case, student_id, defect), label="malformed")
    marker_id = uuid.uuid4()
    marker = aio_pika.Message(
        body=encode(case.valid_body(student_id)),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        **{**valid_properties(case.contract), "message_id": str(marker_id)},
    )

    # The default exchange routes by queue name, so the message reaches the queue whatever its type.
    await amqp_channel.default_exchange.publish(malformed.to_message(), routing_key=queue.name)
    await amqp_channel.default_exchange.publish(marker, routing_key=queue.name)

    async def marker_processed() -> bool:
        return await scalar(
            session_factory,
            "SELECT count(*) FROM inbox WHERE consumer = :consumer AND message_id = :id",
            consumer=case.inbox_consumer,
            id=marker_id,
        ) == 1
    await wait_for(marker_processed, what=f"the valid request after a message with {malformed.defect}")
    dead = await next_dead_letter(amqp_channel, queue.dead_letter_queue, malformed.defect)

    assert dead.body == malformed.body
    assert dead.message_id == malformed.message_id
    assert dead.headers["x-dead-letter-reason"] == "permanent"
    assert dead.headers["x-exception-type"] == PERMANENT_ERROR
    assert dead.headers["x-exception-message"]
    assert dead.headers["x-attempts"] == 1
    assert dead.headers["x-original-queue"] == queue.name
    assert dead.headers["x-original-exchange"] == ""
    assert dead.headers["x-original-routing-key"] == queue.name


async def next_dead_letter(channel: aio_pika.abc.AbstractChannel, name: str, defect: str) -> aio_pika.abc.AbstractIncomingMessage:
    """Wait for the dead-letter queue's next message and take it, so each example starts with it empty."""
    queue = await channel.get_queue(name)
    received: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def arrived() -> bool:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            received.append(message)
        return bool(received)
    await wait_for(arrived, what=f"the message with {defect} in {name}")
    return received[0]


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
async def test_valid_body_with_wrong_content_type(
    settings, session_factory, topology, amqp_channel, running_worker, student_id, consumer
):
    case = CONSUMERS[consumer]
    queue = topology.queue(case.queue_suffix)
    message = Malformed(
        "wrong content type", encode(case.valid_body(student_id)), content_type="text/plain",
        **valid_properties(case.contract),
    )

    await amqp_channel.default_exchange.publish(message.to_message(), routing_key=queue.name)

    async def processed() -> bool:
        return await scalar(
            session_factory,
            "SELECT count(*) FROM inbox WHERE consumer = :consumer AND message_id = :id",
            consumer=case.inbox_consumer,
            id=uuid.UUID(message.message_id),
        ) == 1

    async def settled() -> bool:
        return await processed() or await queue_depth(amqp_channel, queue.dead_letter_queue) > 0
    await wait_for(settled, what="the message processed or dead-lettered")

    assert not await processed()
    assert await queue_depth(amqp_channel, queue.dead_letter_queue) == 1


async def queue_depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    declared = await channel.declare_queue(name, passive=True)
    return declared.declaration_result.message_count
