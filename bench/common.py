"""Shared set-up for the benchmarks: a scratch database and broker prefix on the local servers."""

from __future__ import annotations

import asyncio
import os
import platform
import uuid
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url

from dashboard_jobs.consumers.topology import build_topology, delete_topology_at
from dashboard_jobs.db import asyncpg_dsn, upgrade_database_async
from dashboard_jobs.settings import DEFAULT_RABBITMQ_URL, Settings

ADMIN_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


@asynccontextmanager
async def scratch(**overrides):
    """Yield Settings for a new database and broker prefix; drop both afterwards."""
    name = f"dashboard_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(ADMIN_URL))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    await upgrade_database_async(url)
    settings = Settings(app_env="development", database_url=url, rabbitmq_url=RABBITMQ_URL,
                        broker_prefix=f"bench-{name[-8:]}", **overrides)
    try:
        yield settings
    finally:
        await delete_topology_at(RABBITMQ_URL, build_topology(settings))
        admin = await asyncpg.connect(asyncpg_dsn(ADMIN_URL))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def run(main) -> None:
    asyncio.run(main())
