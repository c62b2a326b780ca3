"""Broker topology: the events exchange, each consumer's queue, its retry queues and its dead-letter queue.

The relay, the worker and the tests all declare the same topology from these
definitions, so whichever process starts first, a published message has a queue to go to.

Each consumer queue ``<queue>`` comes with:

- ``<queue>.retry.<delay>s``, one per configured retry delay. The consumer publishes a
  failed message there. The queue's message TTL expires it after the delay, and RabbitMQ
  dead-letters it back to ``<queue>`` through the default exchange. Dead-lettering is
  at-least-once (RabbitMQ 3.10 or later), so a message is not dropped between the two queues.
- ``<queue>.dlq``, where the consumer publishes a message that failed permanently or ran
  out of retries, and where RabbitMQ dead-letters one that exceeded the delivery limit.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aiormq.exceptions import ChannelPreconditionFailed

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
# never come back to the queue as redeliveries: they go to a retry queue or the dead-letter
# queue as new messages.
DELIVERY_LIMIT = 20

# The relay publishes with mandatory, so every COMPLETED event needs a queue. This tap
# keeps them for inspection, at most a day and 100,000 of them.
TAP_MESSAGE_TTL_MS = 24 * 3600 * 1000
TAP_MAX_LENGTH = 100_000

# Browsing a dead-letter queue (basic.get, then release) counts as a delivery, and a message
# past a quorum queue's delivery limit is dropped when the queue has no dead-letter exchange.
# RabbitMQ 4.0 and later give quorum queues a default limit of 20, so the limit is set here
# high enough that browsing can never reach it; 3.x has no default and accepts the argument.
DEAD_LETTER_DELIVERY_LIMIT = 1_000_000
DEAD_LETTER_QUEUE_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-delivery-limit": DEAD_LETTER_DELIVERY_LIMIT,
}

# RabbitMQ's reply to a declaration whose arguments differ from the existing entity's, e.g.
# "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'dashboard.summary' in
# vhost '/': received 'classic' but current is 'quorum'".
INEQUIVALENT_ARGUMENT = re.compile(
    r"inequivalent arg '(?P<argument>[^']+)' for (?P<kind>queue|exchange) '(?P<name>[^']+)'"
    r"(?: in vhost '[^']*')?(?::\s*(?P<detail>.+))?"
)


class TopologyMismatchError(RuntimeError):
    """A queue or exchange exists with other arguments than this process declares.

    RabbitMQ closes the channel on such a declaration, so the process cannot run until an
    operator deletes the entity or picks another BROKER_PREFIX.
    """

    def __init__(self, kind: str, name: str, argument: str | None, reply: str) -> None:
        self.kind = kind
        self.name = name
        self.argument = argument
        self.reply = reply
        super().__init__(self._describe())

    @classmethod
    def from_reply(cls, kind: str, name: str, reply: str) -> TopologyMismatchError:
        """Build the error from RabbitMQ's PRECONDITION_FAILED reply to declaring ``kind`` ``name``."""
        match = INEQUIVALENT_ARGUMENT.search(reply)
        if match is None:
            return cls(kind, name, None, reply)
        return cls(match["kind"], match["name"], match["argument"], match["detail"] or reply)

    def _describe(self) -> str:
        if self.argument is None:
            problem = f"RabbitMQ rejected the declaration of {self.kind} '{self.name}' ({self.reply})."
        else:
            problem = (
                f"{self.kind.capitalize()} '{self.name}' already exists with another value of "
                f"argument '{self.argument}' than this process declares (RabbitMQ: {self.reply})."
            )
        return (
            f"{problem} Delete the {self.kind} '{self.name}' (move its messages first if they matter), "
            "or set BROKER_PREFIX to a prefix not used yet, then start again."
        )


@dataclass(frozen=True)
class RetryQueueSpec:
    name: str
    delay_seconds: float
    arguments: dict[str, Any]


@dataclass(frozen=True)
class QueueSpec:
    name: str
    routing_keys: tuple[str, ...]
    arguments: dict[str, Any] = field(default_factory=dict)
    dead_letter_queue: str | None = None
    retry_queues: tuple[RetryQueueSpec, ...] = ()
    consumer: str | None = None


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

    @property
    def consumer_queues(self) -> tuple[QueueSpec, ...]:
        """The queues a consumer reads, each with its retry and dead-letter queues."""
        return tuple(spec for spec in self.queues if spec.consumer is not None)

    def queue_names(self) -> list[str]:
        """Return every queue of the topology: consumer queues, their retry and dead-letter queues, the tap."""
        names: list[str] = []
        for spec in self.queues:
            names.append(spec.name)
            names.extend(retry.name for retry in spec.retry_queues)
            if spec.dead_letter_queue is not None:
                names.append(spec.dead_letter_queue)
        return names


def retry_queue_name(queue: str, delay_seconds: float) -> str:
    return f"{queue}.retry.{delay_seconds:g}s"


def retry_queue(queue: str, delay_seconds: float) -> RetryQueueSpec:
    return RetryQueueSpec(
        name=retry_queue_name(queue, delay_seconds),
        delay_seconds=delay_seconds,
        arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": max(1, round(delay_seconds * 1000)),
            # Expired messages go back to the consumer queue through the default exchange.
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
            # At-least-once dead-lettering keeps a message in this queue until the consumer
            # queue confirmed it; RabbitMQ applies it only together with reject-publish.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


def consumer_queue(
    settings: Settings, consumer: str, routing_keys: tuple[str, ...], retry_delays: Sequence[float]
) -> QueueSpec:
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
        retry_queues=tuple(retry_queue(name, delay) for delay in dict.fromkeys(retry_delays)),
        consumer=consumer,
    )


def dead_letter_exchange_name(settings: Settings) -> str:
    return f"{settings.broker_prefix}.dead-letter"


def build_topology(settings: Settings) -> Topology:
    delays = settings.consumer_retry_delays_seconds
    summary = consumer_queue(
        settings, SUMMARY_CONSUMER, (DashboardSummaryRefreshRequestedV1.TYPE,), delays
    )
    report = consumer_queue(settings, REPORT_CONSUMER, (ParentReportRequestedV1.TYPE,), delays)
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
    """Declare every exchange, queue and binding of ``topology``; idempotent.

    Raises TopologyMismatchError when RabbitMQ refuses a declaration because the entity
    exists with other arguments. The channel is closed after that.
    """
    async with _declaring("exchange", topology.exchange):
        exchange = await channel.declare_exchange(
            topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
    async with _declaring("exchange", topology.dead_letter_exchange):
        dead_letter_exchange = await channel.declare_exchange(
            topology.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )

    for spec in topology.queues:
        async with _declaring("queue", spec.name):
            queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for routing_key in spec.routing_keys:
            await queue.bind(exchange, routing_key=routing_key)

        for retry in spec.retry_queues:
            async with _declaring("queue", retry.name):
                await channel.declare_queue(retry.name, durable=True, arguments=retry.arguments)

        if spec.dead_letter_queue is not None:
            async with _declaring("queue", spec.dead_letter_queue):
                dead_letters = await channel.declare_queue(
                    spec.dead_letter_queue, durable=True, arguments=DEAD_LETTER_QUEUE_ARGUMENTS
                )
            await dead_letters.bind(dead_letter_exchange, routing_key=spec.dead_letter_queue)
    return exchange


async def declare_topology_at(url: str, topology: Topology, timeout_seconds: float) -> None:
    """Declare ``topology`` on a short-lived connection to ``url``.

    Raises TopologyMismatchError as declare_topology does, and aio-pika's connection
    errors when the broker is unreachable.
    """
    connection = await aio_pika.connect(url, timeout=timeout_seconds)
    try:
        channel = await connection.channel()
        await declare_topology(channel, topology)
    finally:
        await connection.close()


async def delete_topology_at(url: str, topology: Topology, timeout_seconds: float = 10.0) -> None:
    """Delete every queue and exchange of ``topology``, messages included; for tests and the demo."""
    connection = await aio_pika.connect(url, timeout=timeout_seconds)
    try:
        channel = await connection.channel()
        for name in topology.queue_names():
            await channel.queue_delete(name)
        await channel.exchange_delete(topology.exchange)
        await channel.exchange_delete(topology.dead_letter_exchange)
    finally:
        await connection.close()


@asynccontextmanager
async def _declaring(kind: str, name: str) -> AsyncIterator[None]:
    try:
        yield
    except ChannelPreconditionFailed as error:
        reply = str(error.args[0]) if error.args else str(error)
        raise TopologyMismatchError.from_reply(kind, name, reply.removeprefix("PRECONDITION_FAILED - ")) from error
