"""Publish outbox rows to RabbitMQ with publisher confirms."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from dashboard_jobs.consumers.topology import Topology, declare_topology
from dashboard_jobs.contracts.base import CAUSATION_HEADER, TRACEPARENT_HEADER, VERSION_HEADER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxRow:
    id: Any
    seq: int
    type: str
    version: int
    payload: dict[str, Any]
    headers: dict[str, str]
    created_at: datetime


def build_message(row: OutboxRow, app_id: str = "dashboard-jobs") -> aio_pika.Message:
    """Build the AMQP message of an outbox row; its message id is the row id."""
    headers: dict[str, Any] = {VERSION_HEADER: row.version}
    if "causation_id" in row.headers:
        headers[CAUSATION_HEADER] = row.headers["causation_id"]
    if "traceparent" in row.headers:
        headers[TRACEPARENT_HEADER] = row.headers["traceparent"]
    return aio_pika.Message(
        body=json.dumps(row.payload, separators=(",", ":")).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(row.id),
        type=row.type,
        correlation_id=row.headers.get("correlation_id"),
        timestamp=row.created_at,
        headers=headers,
        app_id=app_id,
    )


class ConfirmingPublisher:
    """One channel with publisher confirms, where a returned (unroutable) message raises."""

    def __init__(self, url: str, topology: Topology, timeout_seconds: float) -> None:
        self._url = url
        self._topology = topology
        self._timeout = timeout_seconds
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(self._url, timeout=self._timeout)
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await declare_topology(channel, self._topology)
        log.info("publisher connected", extra={"exchange": self._topology.exchange})

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def publish(self, row: OutboxRow) -> None:
        """Publish ``row`` and return once the broker confirmed it; raise on nack, return or timeout.

        aio-pika raises DeliveryError on a nack, PublishError on a return, and
        asyncio.TimeoutError when no confirm arrives in time.
        """
        if self._exchange is None:
            raise RuntimeError("publisher is not connected; call connect() first")
        await self._exchange.publish(
            build_message(row), routing_key=row.type, mandatory=True, timeout=self._timeout
        )
