"""The worker: a FastStream RabbitMQ application running every consumer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from faststream import AckPolicy, StreamMessage
from faststream.rabbit import Channel, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.schemas import ExchangeType
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.consumers.messages import PermanentMessageError, decode
from dashboard_jobs.consumers.reports import register_report_consumer
from dashboard_jobs.consumers.summary import SummaryRefresher
from dashboard_jobs.consumers.topology import SUMMARY_CONSUMER, Topology, build_topology
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)

# A message whose batch failed on a transient database error goes back to its queue after
# this pause, so a database outage does not turn into a redelivery loop that spins the CPU.
TRANSIENT_RETRY_PAUSE_SECONDS = 1.0


async def keep_raw_body(message: StreamMessage[Any]) -> bytes:
    """Skip FastStream's JSON decoding: decode() validates the body and rejects what is invalid."""
    return message.body


@dataclass
class Worker:
    broker: RabbitBroker
    topology: Topology
    summary: SummaryRefresher


def build_worker(settings: Settings, session_factory: async_sessionmaker[AsyncSession]) -> Worker:
    """Build the broker with every subscriber; nothing connects until broker.start()."""
    topology = build_topology(settings)
    broker = RabbitBroker(settings.rabbitmq_url, graceful_timeout=30.0, logger=log)
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

    @broker.subscriber(
        summary_queue,
        exchange,
        channel=Channel(prefetch_count=settings.summary_prefetch),
        ack_policy=AckPolicy.MANUAL,
        decoder=keep_raw_body,
    )
    async def handle_summary_refresh(message: RabbitMessage) -> None:
        raw = message.raw_message
        try:
            decoded = decode(raw, expected=DashboardSummaryRefreshRequestedV1)
        except PermanentMessageError as error:
            log.error(
                "message rejected to the dead-letter queue",
                extra={"message_id": raw.message_id, "queue": summary_spec.name, "reason": str(error)},
            )
            await message.reject(requeue=False)
            return

        extra = {"message_id": str(decoded.envelope.message_id), "correlation_id": str(decoded.envelope.correlation_id)}
        log.debug("summary refresh request received", extra=extra)
        try:
            is_new = await refresher.submit(decoded.envelope, decoded.event)
        except (OperationalError, DBAPIError, OSError) as error:
            log.warning(
                "summary refresh failed on a transient error, requeueing",
                extra={**extra, "error": f"{type(error).__name__}: {error}"},
            )
            await asyncio.sleep(TRANSIENT_RETRY_PAUSE_SECONDS)
            await message.nack(requeue=True)
            return
        except Exception:
            log.exception("summary refresh failed, message rejected to the dead-letter queue", extra=extra)
            await message.reject(requeue=False)
            return

        await message.ack()
        if not is_new:
            log.info("duplicate summary refresh request acknowledged and skipped", extra=extra)

    register_report_consumer(broker, settings, session_factory, topology)
    return Worker(broker=broker, topology=topology, summary=refresher)
