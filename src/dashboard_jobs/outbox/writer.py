"""Add events to the outbox inside the caller's transaction."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard_jobs.contracts.base import Event
from dashboard_jobs.domain.models import OutboxMessage

log = logging.getLogger(__name__)

# Channel of the NOTIFY that wakes the relays. PostgreSQL delivers it only when the writing
# transaction commits, and folds identical notifications of one transaction into one.
NOTIFY_CHANNEL = "outbox_new"


async def add_event(
    session: AsyncSession,
    event: Event,
    *,
    aggregate_type: str,
    aggregate_id: str,
    correlation_id: uuid.UUID | None = None,
    causation_id: uuid.UUID | None = None,
    traceparent: str | None = None,
) -> uuid.UUID:
    """Insert ``event`` as an outbox row in the session's transaction and return its message id.

    The row commits or rolls back with the caller's domain rows, which is what removes the
    dual write: nothing reaches the broker unless the write that caused it committed.
    """
    [message_id] = await add_events(
        session,
        [(event, aggregate_id)],
        aggregate_type=aggregate_type,
        correlation_id=correlation_id,
        causation_id=causation_id,
        traceparent=traceparent,
    )
    return message_id


async def add_events(
    session: AsyncSession,
    events: Sequence[tuple[Event, str]],
    *,
    aggregate_type: str,
    correlation_id: uuid.UUID | None = None,
    causation_id: uuid.UUID | None = None,
    traceparent: str | None = None,
) -> list[uuid.UUID]:
    """Insert (event, aggregate id) pairs as outbox rows with one statement; return their message ids.

    Without ``correlation_id`` each event is the start of its own correlation.
    """
    if not events:
        return []
    rows = []
    for event, aggregate_id in events:
        message_id = uuid.uuid4()
        headers: dict[str, str] = {"correlation_id": str(correlation_id or message_id)}
        if causation_id is not None:
            headers["causation_id"] = str(causation_id)
        if traceparent is not None:
            headers["traceparent"] = traceparent
        rows.append({
            "id": message_id,
            "aggregatetype": aggregate_type,
            "aggregateid": aggregate_id,
            "type": event.TYPE,
            "version": event.VERSION,
            "payload": event.model_dump(mode="json"),
            "headers": headers,
        })

    await session.execute(insert(OutboxMessage), rows)
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    log.debug(
        "outbox events added",
        extra={"outbox_ids": [str(row["id"]) for row in rows[:20]], "count": len(rows),
               "event_type": rows[0]["type"]},
    )
    return [row["id"] for row in rows]
