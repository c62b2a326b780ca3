"""The worker: a FastStream RabbitMQ application running every consumer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.schemas import ExchangeType
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.consumers.failures import FailurePolicy
from dashboard_jobs.consumers.messages import decode, keep_raw_body
from dashboard_jobs.consumers.reports import register_report_consumer
from dashboard_jobs.consumers.summary import SummaryRefresher
from dashboard_jobs.consumers.topology import SUMMARY_CONSUMER, Topology, build_topology, declare_topology_at
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)


class WorkerBroker(RabbitBroker):
    """A RabbitBroker that declares the whole topology before its subscribers start.

    The subscribers declare only their own queue and exchange. The retry and dead-letter
    queues must exist before the first failure, and a queue that exists with other
    arguments must stop the worker with TopologyMismatchError instead of leaving it on a
    closed channel.
    """

    def __init__(self, settings: Settings, topology: Topology, **options: Any) -> None:
        super().__init__(settings.rabbitmq_url, **options)
        self._settings = settings
        self._topology = topology

    async def start(self) -> None:
        await declare_topology_at(self._settings.rabbitmq_url, self._topology, self._settings.publish_timeout_seconds)
        await super().start()


@dataclass
class Worker:
    broker: RabbitBroker
    topology: Topology
    summary: SummaryRefresher


def build_worker(settings: Settings, session_factory: async_sessionmaker[AsyncSession]) -> Worker:
    """Build the broker with every subscriber; nothing connects until broker.start()."""
    topology = build_topology(settings)
    broker = WorkerBroker(settings, topology, graceful_timeout=settings.shutdown_grace_seconds, logger=log)
    refresher = SummaryRefresher(
        session_factory,
        coalesce_seconds=settings.summary_coalesce_seconds,
        max_batch_messages=settings.summary_max_batch_messages,
    )

    exchange = RabbitExchange(topology.exchange, type=ExchangeType.TOPIC, durable=True)
    summary_spec = topology.queue(SUMMARY_CONSUMER)
    summary_queue = RabbitQueue(
        summary_spec.name,
        durable=True,
        arguments=summary_spec.arguments,
        routing_key=summary_spec.routing_keys[0],
    )
    failures = FailurePolicy(
        broker, summary_spec, settings.consumer_retry_delays_seconds, settings.publish_timeout_seconds
    )

    @broker.subscriber(
        summary_queue,
        exchange,
        channel=Channel(prefetch_count=settings.summary_prefetch),
        ack_policy=AckPolicy.MANUAL,
        decoder=keep_raw_body,
    )
    async def handle_summary_refresh(message: RabbitMessage) -> None:
        # Every failure, of the message itself or of the batch it joined, goes through the
        # policy one message at a time, so each keeps its own attempt count.
        try:
            decoded = decode(message.raw_message, expected=DashboardSummaryRefreshRequestedV1)
            log.debug("summary refresh request received", extra={"message_id": str(decoded.envelope.message_id)})
            is_new = await refresher.submit(decoded.envelope, decoded.event)
        except Exception as error:  # noqa: BLE001 - the policy classifies every failure
            await failures.handle(message, error)
            return

        await message.ack()
        if not is_new:
            log.info(
                "duplicate summary refresh request acknowledged and skipped",
                extra={"message_id": str(decoded.envelope.message_id),
                       "correlation_id": str(decoded.envelope.correlation_id)},
            )

    register_report_consumer(broker, settings, session_factory, topology)
    return Worker(broker=broker, topology=topology, summary=refresher)
