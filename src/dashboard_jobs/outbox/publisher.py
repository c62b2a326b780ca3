"""Publish outbox rows to RabbitMQ with publisher confirms."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError

from dashboard_jobs.consumers.topology import Topology, declare_topology
from dashboard_jobs.contracts.base import CAUSATION_HEADER, TRACEPARENT_HEADER, VERSION_HEADER

log = logging.getLogger(__name__)

# RabbitMQ closes the channel on a message larger than its max_message_size (16 MiB by
# default since 4.0, 128 MiB in 3.x). A closed channel reads as an outage, so the relay
# rejects such a row itself: otherwise it would block every batch it is claimed with.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# How long the check that follows a confirm timeout waits for the broker's response.
PROBE_TIMEOUT_SECONDS = 5.0


class BrokerUnavailableError(ConnectionError):
    """The broker cannot take any message: connection or channel closed, connection refused,
    or no response at all. Nothing is wrong with the messages being published."""


class ConfirmTimeoutError(TimeoutError):
    """No confirm arrived in time although the broker still responds on the connection."""


class MessageTooLargeError(ValueError):
    """The message is larger than the broker accepts, so it was not sent."""


@dataclass(frozen=True)
class OutboxRow:
    id: Any
    seq: int
    type: str
    version: int
    payload: dict[str, Any]
    headers: dict[str, str]
    created_at: datetime
    attempts: int = 0
    """Failed publish attempts before this claim."""


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
    """One robust channel with publisher confirms, where a returned (unroutable) message raises.

    ``publish`` separates two kinds of failure. A nack, a return, an oversized body or a
    confirm timeout while the broker still responds concern one message and raise the
    error itself. A closed connection or channel, a refused connection or a broker that no
    longer responds raise BrokerUnavailableError, because the message is not at fault.
    """

    def __init__(self, url: str, topology: Topology, timeout_seconds: float) -> None:
        self._url = url
        self._topology = topology
        self._timeout = timeout_seconds
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._probe: asyncio.Task[bool] | None = None

    @property
    def is_connected(self) -> bool:
        """True while the connection is open and the channel usable, as far as the client can tell."""
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._connection.connected.is_set()
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def connect(self) -> None:
        """Open the robust connection and channel and declare the topology.

        Raises BrokerUnavailableError when the broker rejects the connection or does not respond in time.
        """
        try:
            self._connection = await aio_pika.connect_robust(self._url, timeout=self._timeout)
            self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            self._exchange = await declare_topology(self._channel, self._topology)
        except (OSError, TimeoutError, AMQPError, ChannelInvalidStateError) as error:
            await self.close()
            raise BrokerUnavailableError(f"connecting to RabbitMQ failed: {_describe(error)}") from error
        log.info("publisher connected", extra={"exchange": self._topology.exchange})

    async def ready(self) -> None:
        """Return once the broker can take messages, connecting again if the connection was closed.

        The robust connection reconnects and restores the channel and topology by itself,
        so this mostly waits for it. Raises BrokerUnavailableError after the publish timeout.
        """
        if self._connection is None or self._connection.is_closed or self._channel is None:
            await self.close()
            await self.connect()
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._channel.ready()
        except TimeoutError as error:
            raise BrokerUnavailableError(
                f"RabbitMQ connection not restored within {self._timeout} s"
            ) from error

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = None
        self._exchange = None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), self._timeout)
            except (OSError, TimeoutError, AMQPError) as error:
                log.warning("closing the publisher connection failed", extra={"error": _describe(error)})

    async def publish(self, row: OutboxRow) -> None:
        """Publish ``row`` and return once the broker confirmed it.

        Raises DeliveryError on a nack, PublishError (a DeliveryError) on a return,
        MessageTooLargeError for an oversized body, ConfirmTimeoutError when no confirm
        arrives in time although the broker responds, and BrokerUnavailableError otherwise.
        """
        if self._exchange is None:
            raise BrokerUnavailableError("publisher is not connected; call connect() first")
        message = build_message(row)
        if len(message.body) > MAX_MESSAGE_BYTES:
            raise MessageTooLargeError(
                f"message body of {len(message.body)} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes"
            )

        try:
            # The timeout also covers the wait for a robust connection being restored.
            async with asyncio.timeout(self._timeout):
                await self._exchange.publish(message, routing_key=row.type, mandatory=True)
        except DeliveryError:
            raise
        except TimeoutError as error:
            if await self._broker_responds():
                raise ConfirmTimeoutError(f"no publisher confirm within {self._timeout} s") from error
            raise BrokerUnavailableError(
                f"no publisher confirm within {self._timeout} s and the broker does not respond"
            ) from error
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # aiormq cancels the pending confirms of a channel that closes.
            raise BrokerUnavailableError("the channel closed before the confirm arrived") from None
        except (AMQPError, ChannelInvalidStateError, OSError) as error:
            raise BrokerUnavailableError(f"publishing failed: {_describe(error)}") from error

    async def _broker_responds(self) -> bool:
        # One passive declare of the exchange, shared by every publish of the batch that
        # timed out. A broker that blocks publishers (memory or disk alarm) stops reading
        # the connection, so it fails this check too and counts as unavailable.
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._declare_exchange_passively())
        return await asyncio.shield(self._probe)

    async def _declare_exchange_passively(self) -> bool:
        if self._channel is None or not self.is_connected:
            return False
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                channel = await self._channel.get_underlay_channel()
                await channel.exchange_declare(exchange=self._topology.exchange, passive=True)
        except (OSError, TimeoutError, AMQPError, ChannelInvalidStateError):
            return False
        return True


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
