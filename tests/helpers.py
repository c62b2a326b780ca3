"""Small helpers shared by the tests: polling with a deadline and direct inserts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``condition`` until it returns True; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def insert_students(sessions: async_sessionmaker[AsyncSession], count: int) -> list[uuid.UUID]:
    ids = sorted(uuid.uuid4() for _ in range(count))
    async with sessions() as session, session.begin():
        await session.execute(
            text("INSERT INTO students (id, first_name, last_name, grade) "
                 "SELECT unnest(CAST(:ids AS uuid[])), 'Camille', 'Martin', '5e'"),
            {"ids": ids},
        )
    return ids


async def scalar(sessions: async_sessionmaker[AsyncSession], sql: str, **params: object):
    async with sessions() as session:
        return (await session.execute(text(sql), params)).scalar_one()


def utc(text_value: str) -> datetime:
    return datetime.fromisoformat(text_value)
