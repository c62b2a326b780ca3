"""The consumers' inbox: which messages each consumer has already processed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

RECORD = text(
    """
    INSERT INTO inbox (consumer, message_id)
    SELECT :consumer, unnest(CAST(:ids AS uuid[]))
    ON CONFLICT (consumer, message_id) DO NOTHING
    RETURNING message_id
    """
)


async def record_new_messages(
    session: AsyncSession, consumer: str, message_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Insert inbox rows in the session's transaction and return the ids not seen before.

    A concurrent transaction inserting the same id makes this statement wait for it. When
    that transaction commits, the id is not returned here, so two consumers never both
    apply one message.
    """
    rows = await session.execute(RECORD, {"consumer": consumer, "ids": list(message_ids)})
    return set(rows.scalars())
