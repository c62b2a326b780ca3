"""Broker topology: the events exchange, each consumer's queue and its dead-letter queue.

The relay, the worker and the tests all declare the same topology from these
definitions, so whichever process starts first, a published message has a queue to go to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from dashboard_jobs.contracts.reports import ParentReportCompletedV1, ParentReportRequestedV1
from dashboard_jobs.contracts.summary import (
    DashboardSummaryRefreshCompletedV1,
    DashboardSummaryRefreshRequestedV1,
)
from dashboard_jobs.settings import Settings

SUMMARY_CONSUMER = "summary"
REPORT_CONSUMER = "parent_report"
COMPLETED_TAP = "completed"

# Quorum queues dead-letter a message redelivered more often than this. It is a safety net
# against a message that crashes its consumer every time. Failures the consumer handles
# are rejected straight to the dead-letter queue.
DELIVERY_LIMIT = 20

# The relay publishes with mandatory, so every COMPLETED event needs a queue. This tap
# keeps them for inspection, at most a day and 100,000 of them.
TAP_MESSAGE_TTL_MS = 24 * 3600 * 1000
TAP_MAX_LENGTH = 100_000


@dataclass(frozen=True)
class QueueSpec:
    name: str
    routing_keys: tuple[str, ...]
    arguments: dict[str, Any] = field(default_factory=dict)
    dead_letter_queue: str | None = None


@dataclass(frozen=True)
class Topology:
    exchange: str
    dead_letter_exchange: str
    queues: tuple[QueueSpec, ...]

    def queue(self, name_suffix: str) -> QueueSpec:
        for spec in self.queues:
            if spec.name.endswith(f".{name_suffix}"):
                return spec
        raise KeyError(name_suffix)


def consumer_queue(settings: Settings, consumer: str, routing_keys: tuple[str, ...]) -> QueueSpec:
    name = settings.queue_name(consumer)
    dead_letter_queue = f"{name}.dlq"
    return QueueSpec(
        name=name,
        routing_keys=routing_keys,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": dead_letter_exchange_name(settings),
            "x-dead-letter-routing-key": dead_letter_queue,
            "x-delivery-limit": DELIVERY_LIMIT,
        },
        dead_letter_queue=dead_letter_queue,
    )


def dead_letter_exchange_name(settings: Settings) -> str:
    return f"{settings.broker_prefix}.dead-letter"


def build_topology(settings: Settings) -> Topology:
    summary = consumer_queue(
        settings, SUMMARY_CONSUMER, (DashboardSummaryRefreshRequestedV1.TYPE,)
    )
    report = consumer_queue(settings, REPORT_CONSUMER, (ParentReportRequestedV1.TYPE,))
    tap = QueueSpec(
        name=settings.queue_name(COMPLETED_TAP),
        routing_keys=(DashboardSummaryRefreshCompletedV1.TYPE, ParentReportCompletedV1.TYPE),
        arguments={
            "x-queue-type": "classic",
            "x-message-ttl": TAP_MESSAGE_TTL_MS,
            "x-max-length": TAP_MAX_LENGTH,
            "x-overflow": "drop-head",
        },
    )
    return Topology(
        exchange=settings.exchange_name,
        dead_letter_exchange=dead_letter_exchange_name(settings),
        queues=(summary, report, tap),
    )


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare every exchange, queue and binding of ``topology``; idempotent."""
    exchange = await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dead_letter_exchange = await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    for spec in topology.queues:
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for routing_key in spec.routing_keys:
            await queue.bind(exchange, routing_key=routing_key)
        if spec.dead_letter_queue is not None:
            dead_letters = await channel.declare_queue(
                spec.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await dead_letters.bind(dead_letter_exchange, routing_key=spec.dead_letter_queue)
    return exchange
