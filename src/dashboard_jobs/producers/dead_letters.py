"""Dead-letter operations: list, replay and purge the consumers' dead-letter queues.

Unlike every other producer, these talk to RabbitMQ directly: a dead letter exists only
in the broker, so there is no outbox row to write. The CLI (``dashboard-jobs dlq``) and the
admin API endpoints call the same functions.

- Listing browses with basic.get without acknowledging, then closes the channel, which
  returns every message to its queue. Nothing is lost, though RabbitMQ may return the
  messages in another order. Each browse counts as a delivery, so dead-letter queues are
  declared with a delivery limit that browsing cannot reach.
- Replay publishes a copy of each selected dead letter to the exchange and routing key it
  was first published with, keeping its message id so the consumers' inbox still skips one
  that was already processed, with fresh attempt headers. It acknowledges the dead letter
  only after the broker confirmed the copy, so a failure in between leaves it in place.
- Purge deletes what a dead-letter queue holds, apart from messages a browse or replay is
  holding at that moment.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, ChannelNotFoundEntity

from dashboard_jobs.consumers.failures import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    DEAD_LETTERED_AT_HEADER,
    EXCEPTION_MESSAGE_HEADER,
    EXCEPTION_TYPE_HEADER,
    LAST_ERROR_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_QUEUE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    REASON_HEADER,
    CopyNotConfirmedError,
    application_headers,
    copy_message,
)
from dashboard_jobs.consumers.topology import Topology, build_topology
from dashboard_jobs.runtime import BrokerUnavailableError, make_url_like
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1_000

REPLAYED_AT_HEADER = "x-replayed-at"

# Headers of the failure policy that describe the message's previous life. A replayed
# message starts again at attempt 1 without them.
POLICY_HEADERS = frozenset({
    ATTEMPT_HEADER,
    LAST_ERROR_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    ORIGINAL_QUEUE_HEADER,
    REASON_HEADER,
    EXCEPTION_TYPE_HEADER,
    EXCEPTION_MESSAGE_HEADER,
    ATTEMPTS_HEADER,
    DEAD_LETTERED_AT_HEADER,
    REPLAYED_AT_HEADER,
})

# Seconds to wait for the reply to one basic.get.
GET_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class DeadLetterQueue:
    consumer: str
    queue: str
    dead_letter_queue: str


class UnknownQueueError(ValueError):
    """The queue option names no consumer of this deployment."""

    def __init__(self, value: str, known: list[DeadLetterQueue]) -> None:
        self.value = value
        self.known = known
        names = ", ".join(f"{q.consumer} ({q.dead_letter_queue})" for q in known)
        super().__init__(f"no consumer queue is named {value!r}; known queues: {names}")


@dataclass(frozen=True)
class DeadLetter:
    """An operator's view of one dead letter, read from its headers."""

    dead_letter_queue: str
    message_id: str | None
    type: str | None
    reason: str | None
    attempts: int | None
    dead_lettered_at: datetime | None
    error: str | None
    original_exchange: str | None
    original_routing_key: str | None

    def age(self, now: datetime) -> timedelta | None:
        return None if self.dead_lettered_at is None else now - self.dead_lettered_at


@dataclass
class ReplayResult:
    dry_run: bool
    replayed: list[DeadLetter] = field(default_factory=list)
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)


def dead_letter_queues(topology: Topology) -> list[DeadLetterQueue]:
    return [
        DeadLetterQueue(consumer=str(spec.consumer), queue=spec.name, dead_letter_queue=str(spec.dead_letter_queue))
        for spec in topology.consumer_queues
    ]


def select_queues(topology: Topology, queue: str | None) -> list[DeadLetterQueue]:
    """Return every dead-letter queue, or the one ``queue`` names.

    ``queue`` may be the consumer's name (summary), its queue (dashboard.summary) or its
    dead-letter queue (dashboard.summary.dlq). Raises UnknownQueueError otherwise.
    """
    known = dead_letter_queues(topology)
    if queue is None:
        return known
    for candidate in known:
        if queue in {candidate.consumer, candidate.queue, candidate.dead_letter_queue}:
            return [candidate]
    raise UnknownQueueError(queue, known)


async def list_dead_letters(
    settings: Settings, queue: str | None = None, limit: int = DEFAULT_LIST_LIMIT
) -> list[DeadLetter]:
    """Return up to ``limit`` dead letters, oldest first in each queue, leaving them all in place."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    selected = select_queues(build_topology(settings), queue)
    letters: list[DeadLetter] = []
    async with _connection(settings) as connection:
        for dead_letters in selected:
            if len(letters) >= limit:
                break
            # Closing this channel releases the messages got without acknowledgement.
            async with _browsing(connection, dead_letters.dead_letter_queue) as source:
                if source is None:
                    continue
                _, amqp_queue = source
                while len(letters) < limit:
                    raw = await amqp_queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_SECONDS)
                    if raw is None:
                        break
                    letters.append(read_dead_letter(raw, dead_letters))
    return letters


async def replay_dead_letters(
    settings: Settings,
    queue: str | None = None,
    message_ids: Collection[str] = (),
    limit: int | None = None,
    dry_run: bool = False,
) -> ReplayResult:
    """Move dead letters back to where they were first published; with ``dry_run``, change nothing.

    Selects the messages whose id is in ``message_ids`` (all when empty), at most ``limit``
    of them. Each queue is scanned once, so a message is never replayed twice in one call.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    selected = select_queues(build_topology(settings), queue)
    selected_ids = {message_id.strip() for message_id in message_ids}
    result = ReplayResult(dry_run=dry_run)
    async with _connection(settings) as connection:
        for dead_letters in selected:
            if limit is not None and len(result.replayed) >= limit:
                break
            async with _browsing(connection, dead_letters.dead_letter_queue) as source:
                if source is None:
                    continue
                await _replay_queue(connection, source, dead_letters, selected_ids, limit, result, settings)
    return result


async def _replay_queue(
    connection: AbstractConnection,
    source: tuple[AbstractChannel, AbstractQueue],
    dead_letters: DeadLetterQueue,
    selected_ids: set[str],
    limit: int | None,
    result: ReplayResult,
    settings: Settings,
) -> None:
    _, amqp_queue = source
    depth = amqp_queue.declaration_result.message_count or 0
    # Publishing on a channel of its own keeps the browse going if the broker closes the
    # publishing channel, for example on an exchange that no longer exists.
    target = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        for _ in range(depth):
            if limit is not None and len(result.replayed) >= limit:
                return
            raw = await amqp_queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_SECONDS)
            if raw is None:
                return
            if selected_ids and (raw.message_id or "") not in selected_ids:
                continue
            letter = read_dead_letter(raw, dead_letters)
            if letter.original_exchange is None or letter.original_routing_key is None:
                result.failed.append((letter, "the original exchange and routing key are unknown"))
                continue
            if result.dry_run:
                result.replayed.append(letter)
                continue
            try:
                await _publish_replay(target, raw, letter, settings.publish_timeout_seconds)
            except (AMQPError, ChannelInvalidStateError, TimeoutError, CopyNotConfirmedError) as error:
                result.failed.append((letter, f"{type(error).__name__}: {error}"))
                log.error(
                    "dead letter replay failed; the message stays in the dead-letter queue",
                    extra={"message_id": letter.message_id, "dead_letter_queue": dead_letters.dead_letter_queue,
                           "error": f"{type(error).__name__}: {error}"},
                )
                return
            result.replayed.append(letter)
            try:
                await raw.ack()
            except (AMQPError, ChannelInvalidStateError) as error:
                # The copy is on its way to the consumer. The dead letter stays, and replaying
                # it again is harmless because the inbox skips a processed message id.
                result.failed.append((letter, f"replayed, but removing it from the dead-letter queue failed: {error}"))
                return
            log.info(
                "dead letter replayed",
                extra={"message_id": letter.message_id, "dead_letter_queue": dead_letters.dead_letter_queue,
                       "exchange": letter.original_exchange, "routing_key": letter.original_routing_key},
            )
    finally:
        if not target.is_closed:
            await target.close()


async def _publish_replay(
    channel: AbstractChannel, raw: AbstractIncomingMessage, letter: DeadLetter, timeout_seconds: float
) -> None:
    headers = {name: value for name, value in application_headers(raw.headers).items() if name not in POLICY_HEADERS}
    headers[ATTEMPT_HEADER] = 1
    headers[REPLAYED_AT_HEADER] = datetime.now(UTC).isoformat()
    if letter.original_exchange:
        exchange = await channel.get_exchange(str(letter.original_exchange), ensure=False)
    else:
        exchange = channel.default_exchange
    confirmation = await exchange.publish(
        copy_message(raw, headers), routing_key=str(letter.original_routing_key), mandatory=True, timeout=timeout_seconds
    )
    if not isinstance(confirmation, aiormq.spec.Basic.Ack):
        raise CopyNotConfirmedError(f"the broker did not confirm the replayed copy: {confirmation!r}")


async def purge_dead_letters(settings: Settings, queue: str | None = None) -> dict[str, int]:
    """Delete the messages of every dead-letter queue, or of the one ``queue`` names; return the counts."""
    selected = select_queues(build_topology(settings), queue)
    purged: dict[str, int] = {}
    async with _connection(settings) as connection:
        for dead_letters in selected:
            async with _browsing(connection, dead_letters.dead_letter_queue) as source:
                if source is None:
                    purged[dead_letters.dead_letter_queue] = 0
                    continue
                _, amqp_queue = source
                reply = await amqp_queue.purge()
                purged[dead_letters.dead_letter_queue] = int(reply.message_count or 0)
    log.warning("dead-letter queues purged", extra={"purged": purged})
    return purged


def read_dead_letter(raw: AbstractIncomingMessage, dead_letters: DeadLetterQueue) -> DeadLetter:
    """Describe ``raw`` from the headers of the failure policy, else from RabbitMQ's x-death."""
    headers = raw.headers or {}
    death = _consumer_death(headers, dead_letters.queue)
    exchange, routing_key = _origin(headers, death)
    return DeadLetter(
        dead_letter_queue=dead_letters.dead_letter_queue,
        message_id=raw.message_id,
        type=raw.type,
        reason=_text(headers.get(REASON_HEADER)) or _text(headers.get("x-first-death-reason")),
        attempts=_integer(headers.get(ATTEMPTS_HEADER)),
        dead_lettered_at=_dead_lettered_at(headers, death),
        error=_first_error_line(headers),
        original_exchange=exchange,
        original_routing_key=routing_key,
    )


def _consumer_death(headers: Mapping[str, Any], queue: str) -> Mapping[str, Any] | None:
    # RabbitMQ adds one x-death entry per queue and reason. The entry of the consumer queue
    # is there when the queue itself dead-lettered the message (delivery limit exceeded).
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return None
    for death in deaths:
        if isinstance(death, Mapping) and death.get("queue") == queue:
            return death
    return None


def _origin(headers: Mapping[str, Any], death: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    exchange = headers.get(ORIGINAL_EXCHANGE_HEADER)
    routing_key = headers.get(ORIGINAL_ROUTING_KEY_HEADER)
    if isinstance(exchange, (str, bytes)) and isinstance(routing_key, (str, bytes)):
        return _text(exchange) or "", _text(routing_key) or ""
    if death is not None:
        routing_keys = death.get("routing-keys")
        if isinstance(routing_keys, list) and routing_keys:
            return _text(death.get("exchange")) or "", _text(routing_keys[0])
    return None, None


def _dead_lettered_at(headers: Mapping[str, Any], death: Mapping[str, Any] | None) -> datetime | None:
    stamp = _text(headers.get(DEAD_LETTERED_AT_HEADER))
    if stamp:
        try:
            parsed = datetime.fromisoformat(stamp)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    moment = death.get("time") if death is not None else None
    if isinstance(moment, datetime):
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def _first_error_line(headers: Mapping[str, Any]) -> str | None:
    message = _text(headers.get(EXCEPTION_MESSAGE_HEADER))
    exception_type = _text(headers.get(EXCEPTION_TYPE_HEADER))
    if message is None and exception_type is None:
        return None
    first_line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    short_type = (exception_type or "").rsplit(".", 1)[-1]
    return f"{short_type}: {first_line}" if short_type and first_line else short_type or first_line


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@asynccontextmanager
async def _connection(settings: Settings) -> AsyncIterator[AbstractConnection]:
    try:
        connection = await aio_pika.connect(settings.rabbitmq_url, timeout=settings.publish_timeout_seconds)
    except (OSError, TimeoutError, AMQPError) as error:
        raise BrokerUnavailableError(
            f"RabbitMQ is not reachable at {make_url_like(settings.rabbitmq_url)} "
            f"({type(error).__name__}: {error}); check RABBITMQ_URL and that the broker runs."
        ) from error
    try:
        yield connection
    finally:
        await connection.close()


@asynccontextmanager
async def _browsing(
    connection: AbstractConnection, name: str
) -> AsyncIterator[tuple[AbstractChannel, AbstractQueue] | None]:
    """Open a channel on the existing queue ``name``, or yield None when it does not exist.

    Closing the channel at the end returns every message got from it and not acknowledged
    to the queue.
    """
    channel = await connection.channel()
    try:
        try:
            amqp_queue = await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            # No relay or worker of this prefix has started yet, so there is nothing to browse.
            yield None
            return
        yield channel, amqp_queue
    finally:
        if not channel.is_closed:
            await channel.close()

