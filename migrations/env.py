"""Alembic environment: runs migrations over the async engine built from the settings."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from dashboard_jobs.db import normalise_database_url
from dashboard_jobs.domain.models import Base
from dashboard_jobs.settings import Settings

target_metadata = Base.metadata


def _database_url() -> str:
    url = context.config.attributes.get("database_url") or Settings().database_url
    if not url:
        raise RuntimeError("DATABASE_URL is not set; run migrations through `dashboard-jobs migrate`.")
    return normalise_database_url(url)


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_database_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
