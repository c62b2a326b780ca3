"""The failure policy of every consumer: retry a transient failure later, dead-letter the rest.

A handler that fails hands the message and the exception to ``FailurePolicy.handle``,
which settles the message in one of two ways, each time by publishing a copy and
acknowledging the original only after the broker confirmed the copy:

- retry: a transient error (database or broker unavailable, serialization failure,
  deadlock, lock or statement timeout), or an unexpected one, while retries remain. The copy
  goes to the queue's retry queue for the attempt's delay (``CONSUMER_RETRY_DELAYS_SECONDS``),
  which returns it to the consumer queue when the delay expires. The attempt number travels
  in the ``x-attempt`` header.
- dead-letter: a permanent error (the message can never be processed as it is) at once, any
  other error once the retries are used up. The copy goes to ``<queue>.dlq`` with headers
  saying why, from where and after how many attempts.

Retries do not use nack with requeue, because RabbitMQ 4.3 stopped counting such nacks
towards a quorum queue's delivery limit, and a redelivery loop would spin the CPU and hold
up the messages behind it. The one nack with requeue left is for a broker that rejects the
copy itself, and it comes after a pause. The queue's own delivery limit stays as the safety
net for a message that kills the process before the policy runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import AMQPConnectionError, ChannelInvalidStateError
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage
from sqlalchemy.exc import DBAPIError, OperationalError

from dashboard_jobs.consumers.messages import PermanentMessageError
from dashboard_jobs.consumers.topology import QueueSpec

log = logging.getLogger(__name__)

# Headers the policy sets. The retry copy carries ATTEMPT (the number of the delivery it
# starts, 2 for the first retry), LAST_ERROR and, from the first retry on, the exchange and
# routing key of the original publication. The dead-letter copy carries the others.
ATTEMPT_HEADER = "x-attempt"
LAST_ERROR_HEADER = "x-last-error"
ORIGINAL_EXCHANGE_HEADER = "x-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER = "x-original-routing-key"
ORIGINAL_QUEUE_HEADER = "x-original-queue"
REASON_HEADER = "x-dead-letter-reason"
EXCEPTION_TYPE_HEADER = "x-exception-type"
EXCEPTION_MESSAGE_HEADER = "x-exception-message"
ATTEMPTS_HEADER = "x-attempts"
DEAD_LETTERED_AT_HEADER = "x-dead-lettered-at"

# Headers RabbitMQ sets on delivery or dead-lettering. They describe one trip through the
# broker, so they are dropped from the copies this module and dead-letter replay publish.
BROKER_HEADERS = frozenset({"x-death", "x-delivery-count"})
BROKER_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")

# Exception texts are cut to this many characters before they go into a header.
MAX_ERROR_TEXT_LENGTH = 1000

# PostgreSQL error codes that a later attempt can succeed past: serialization failure,
# deadlock, lock not available, query canceled (statement timeout), admin shutdown, crash
# shutdown, cannot connect now (the server is starting up or recovering). Class 08
# (connection exception) is matched by its prefix.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"})
CONNECTION_EXCEPTION_CLASS = "08"

# When the broker rejects the retry or dead-letter copy itself (nack, return, confirm
# timeout), the message goes back to its queue after this pause, so a broker in that state
# receives one redelivery per pause and message instead of a loop that spins the CPU.
PUBLISH_FAILURE_PAUSE_SECONDS = 5.0


class FailureKind(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNEXPECTED = "unexpected"


class DeadLetterReason(StrEnum):
    PERMANENT = "permanent"
    RETRIES_EXHAUSTED = "retries_exhausted"


class CopyNotConfirmedError(RuntimeError):
    """The broker did not confirm the retry or dead-letter copy of a message."""


def classify(error: BaseException) -> FailureKind:
    """Return whether ``error`` is transient, permanent, or unexpected (a bug).

    Unexpected errors are retried like transient ones, because a bug may depend on data
    that changes, and then dead-lettered when the retries are used up.
    """
    if isinstance(error, PermanentMessageError):
        return FailureKind.PERMANENT
    # AMQPConnectionError and TimeoutError are also OSError subclasses on Python 3.11; they
    # are listed for the reader.
    if isinstance(error, (OSError, ConnectionError, TimeoutError, AMQPConnectionError, ChannelInvalidStateError)):
        return FailureKind.TRANSIENT
    if isinstance(error, OperationalError):
        return FailureKind.TRANSIENT
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return FailureKind.TRANSIENT
    sqlstate = _sqlstate(error)
    if sqlstate is not None and (sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith(CONNECTION_EXCEPTION_CLASS)):
        return FailureKind.TRANSIENT
    return FailureKind.UNEXPECTED


def _sqlstate(error: BaseException) -> str | None:
    # SQLAlchemy keeps the driver's exception in .orig; asyncpg's own exceptions and the
    # SQLAlchemy asyncpg adapter expose .sqlstate, psycopg exposes .sqlstate or .pgcode.
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and code:
            return code
        current = getattr(current, "orig", None) or current.__cause__
    return None


def attempt_of(raw: AbstractIncomingMessage) -> int:
    """Return the attempt this delivery is: 1 for a first delivery, n + 1 after n retries."""
    value = (raw.headers or {}).get(ATTEMPT_HEADER)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return 1


def application_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``headers`` without the ones RabbitMQ sets on delivery and dead-lettering."""
    return {
        name: value
        for name, value in (headers or {}).items()
        if name not in BROKER_HEADERS and not name.startswith(BROKER_HEADER_PREFIXES)
    }


def describe_error(error: BaseException) -> str:
    """Return "Type: first line of the message", cut to MAX_ERROR_TEXT_LENGTH characters."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return _bounded(text)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT_LENGTH else text[: MAX_ERROR_TEXT_LENGTH - 1] + "…"


def copy_message(raw: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """Return a persistent copy of ``raw`` with its body, ids, type and timestamp, and ``headers``.

    The message id stays the same, so the consumers' inbox still recognises a copy of a
    message that was already processed.
    """
    return aio_pika.Message(
        body=raw.body,
        headers=headers,
        content_type=raw.content_type,
        content_encoding=raw.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=raw.priority,
        correlation_id=raw.correlation_id,
        message_id=raw.message_id,
        timestamp=raw.timestamp,
        type=raw.type,
        app_id=raw.app_id,
    )


class FailurePolicy:
    """Settles the messages of one consumer queue whose handling failed.

    Copies are published with the worker's FastStream broker rather than a channel of
    their own. In FastStream 0.7 its default channel has publisher confirms, so
    ``broker.publish`` waits for the broker's Basic.Ack, and it shares the connection the
    message arrived on. A connection that drops before the confirm also prevents the
    acknowledgement, so the broker redelivers the original and nothing is lost. A drop
    between the confirm and the acknowledgement leaves a duplicate, which the inbox skips.
    """

    def __init__(
        self,
        broker: RabbitBroker,
        queue: QueueSpec,
        retry_delays_seconds: Sequence[float],
        publish_timeout_seconds: float,
    ) -> None:
        if queue.dead_letter_queue is None:
            raise ValueError(f"queue {queue.name} has no dead-letter queue; only consumer queues get a failure policy")
        retry_queues = {retry.delay_seconds: retry.name for retry in queue.retry_queues}
        missing = [delay for delay in retry_delays_seconds if delay not in retry_queues]
        if missing:
            raise ValueError(f"queue {queue.name} has no retry queue for the delays {missing}")
        self._broker = broker
        self._queue = queue
        self._dead_letter_queue = queue.dead_letter_queue
        self._delays = list(retry_delays_seconds)
        self._retry_queues = retry_queues
        self._timeout = publish_timeout_seconds

    async def handle(self, message: RabbitMessage, error: BaseException) -> None:
        """Retry or dead-letter ``message`` after ``error``, then acknowledge it.

        Broker failures while doing so are logged, not raised, because the handler has no
        better way to settle the message.
        """
        raw = message.raw_message
        kind = classify(error)
        attempt = attempt_of(raw)
        try:
            if kind is FailureKind.PERMANENT:
                await self._dead_letter(raw, error, kind, attempt, DeadLetterReason.PERMANENT)
            elif attempt <= len(self._delays):
                await self._retry(raw, error, kind, attempt)
            else:
                await self._dead_letter(raw, error, kind, attempt, DeadLetterReason.RETRIES_EXHAUSTED)
        # Whatever stopped the copy (nack, return, timeout, closed channel, a header the
        # client cannot encode), the original must not be acknowledged without it.
        except Exception as publish_error:  # noqa: BLE001
            await self._return_to_queue(message, error, publish_error)
            return

        try:
            await message.ack()
        except (aiormq.exceptions.AMQPError, ChannelInvalidStateError) as ack_error:
            # The copy is already in its queue. The broker redelivers the original, and the
            # inbox skips it if the copy is processed first.
            log.warning(
                "failed message copied but its acknowledgement failed",
                extra={"message_id": raw.message_id, "queue": self._queue.name, "error": describe_error(ack_error)},
            )

    async def _retry(
        self, raw: AbstractIncomingMessage, error: BaseException, kind: FailureKind, attempt: int
    ) -> None:
        delay = self._delays[attempt - 1]
        headers = application_headers(raw.headers)
        headers[ATTEMPT_HEADER] = attempt + 1
        headers[LAST_ERROR_HEADER] = describe_error(error)
        headers.setdefault(ORIGINAL_EXCHANGE_HEADER, raw.exchange or "")
        headers.setdefault(ORIGINAL_ROUTING_KEY_HEADER, raw.routing_key or "")

        await self._publish(copy_message(raw, headers), self._retry_queues[delay])
        log.warning(
            "message handling failed, retrying after a delay",
            extra={
                "message_id": raw.message_id,
                "queue": self._queue.name,
                "attempt": attempt,
                "delay_seconds": delay,
                "failure": kind.value,
                "error": describe_error(error),
            },
            exc_info=error if kind is FailureKind.UNEXPECTED else None,
        )

    async def _dead_letter(
        self,
        raw: AbstractIncomingMessage,
        error: BaseException,
        kind: FailureKind,
        attempt: int,
        reason: DeadLetterReason,
    ) -> None:
        headers = application_headers(raw.headers)
        headers.setdefault(ORIGINAL_EXCHANGE_HEADER, raw.exchange or "")
        headers.setdefault(ORIGINAL_ROUTING_KEY_HEADER, raw.routing_key or "")
        headers.update({
            REASON_HEADER: reason.value,
            EXCEPTION_TYPE_HEADER: _qualified_name(type(error)),
            EXCEPTION_MESSAGE_HEADER: _bounded(str(error)),
            ATTEMPTS_HEADER: attempt,
            ORIGINAL_QUEUE_HEADER: self._queue.name,
            DEAD_LETTERED_AT_HEADER: datetime.now(UTC).isoformat(),
        })

        await self._publish(copy_message(raw, headers), self._dead_letter_queue)
        log.error(
            "message dead-lettered",
            extra={
                "message_id": raw.message_id,
                "queue": self._queue.name,
                "dead_letter_queue": self._dead_letter_queue,
                "reason": reason.value,
                "attempts": attempt,
                "error": describe_error(error),
            },
            exc_info=error if kind is FailureKind.UNEXPECTED else None,
        )

    async def _publish(self, message: aio_pika.Message, queue: str) -> None:
        # The default exchange routes to the queue of that name, and mandatory makes a
        # missing queue a returned message instead of a silent drop. FastStream's default
        # channel does not raise on a return but yields the returned message, hence the check.
        result = await self._broker.publish(message, routing_key=queue, mandatory=True, timeout=self._timeout)
        if not isinstance(result, aiormq.spec.Basic.Ack):
            raise CopyNotConfirmedError(f"the broker did not confirm the copy sent to {queue}: {result!r}")

    async def _return_to_queue(self, message: RabbitMessage, error: BaseException, publish_error: Exception) -> None:
        raw = message.raw_message
        log.error(
            "could not copy a failed message to its retry or dead-letter queue; it returns to its queue after a pause",
            extra={
                "message_id": raw.message_id,
                "queue": self._queue.name,
                "error": describe_error(error),
                "publish_error": describe_error(publish_error),
                "pause_seconds": PUBLISH_FAILURE_PAUSE_SECONDS,
            },
        )
        await asyncio.sleep(PUBLISH_FAILURE_PAUSE_SECONDS)
        try:
            await message.nack(requeue=True)
        except (aiormq.exceptions.AMQPError, ChannelInvalidStateError):
            # A closed channel returns the message to the queue by itself.
            log.warning("nack failed; the broker redelivers the message", extra={"message_id": raw.message_id})


def _qualified_name(error_type: type[BaseException]) -> str:
    module = error_type.__module__
    return error_type.__qualname__ if module == "builtins" else f"{module}.{error_type.__qualname__}"
