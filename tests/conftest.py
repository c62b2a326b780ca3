"""Shared fixtures: a private database and private broker names for each test run.

Tests talk to the real PostgreSQL and RabbitMQ. TEST_DATABASE_URL (an admin connection
used to create and drop the run's database) and RABBITMQ_URL select the servers; without
them the local servers on 127.0.0.1 are used. When neither a URL nor a local server is
available and Docker is, testcontainers starts both.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dashboard_jobs.consumers.topology import build_topology, declare_topology
from dashboard_jobs.db import asyncpg_dsn, create_engine, create_session_factory, upgrade_database
from dashboard_jobs.settings import Settings

DEFAULT_ADMIN_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _reachable_postgres(url: str) -> bool:
    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(asyncpg_dsn(url), timeout=3)
        except (OSError, asyncpg.PostgresError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    """Return (admin database URL, RabbitMQ URL) of the servers the run uses."""
    admin_url = os.environ.get("TEST_DATABASE_URL", DEFAULT_ADMIN_DATABASE_URL)
    rabbit_url = os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
    if "TEST_DATABASE_URL" in os.environ or _reachable_postgres(admin_url):
        yield admin_url, rabbit_url
        return

    # NOTE: this path needs a Docker engine, which the development machines do not run.
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with PostgresContainer("postgres:16-alpine") as postgres, RabbitMqContainer("rabbitmq:3.13-management") as rabbit:
        admin = postgres.get_connection_url().replace("+psycopg2", "")
        params = rabbit.get_connection_params()
        amqp = f"amqp://guest:guest@{params.host}:{params.port}/"
        yield admin, amqp


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def database_url(servers: tuple[str, str], run_id: str) -> Iterator[str]:
    """Create a database for this test run, migrate it, and drop it at the end."""
    admin_url, _ = servers
    name = f"dashboard_jobs_test_{run_id}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(admin_url))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade_database(url)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def settings(database_url: str, servers: tuple[str, str], run_id: str) -> Settings:
    return Settings(
        app_env="development",
        database_url=database_url,
        rabbitmq_url=servers[1],
        broker_prefix=f"test-{run_id}",
        summary_coalesce_seconds=0.05,
        relay_interval_seconds=1.0,
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url, pool_size=10)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture(scope="session")
async def broker_cleanup(settings: Settings) -> AsyncIterator[None]:
    """Delete this run's exchanges and queues at the end of the session."""
    yield
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        topology = build_topology(settings)
        for spec in topology.queues:
            await channel.queue_delete(spec.name)
            if spec.dead_letter_queue:
                await channel.queue_delete(spec.dead_letter_queue)
        await channel.exchange_delete(topology.exchange)
        await channel.exchange_delete(topology.dead_letter_exchange)
    finally:
        await connection.close()


@pytest.fixture
async def topology(settings: Settings, broker_cleanup: None):
    """Declare the run's topology and purge its queues, so each test starts empty."""
    topology = build_topology(settings)
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, topology)
        for spec in topology.queues:
            await (await channel.get_queue(spec.name)).purge()
            if spec.dead_letter_queue:
                await (await channel.get_queue(spec.dead_letter_queue)).purge()
    finally:
        await connection.close()
    return topology


TABLES_TO_CLEAN = (
    "inbox",
    "outbox",
    "dashboard_summary",
    "tutoring_sessions",
    "evaluations",
    "tasks",
    "parent_students",
    "coach_students",
    "accounts",
    "students",
)


@pytest.fixture
async def clean_db(engine: AsyncEngine) -> None:
    """Empty every table before the test; tests in one run share the database."""
    async with engine.begin() as connection:
        existing = set((await connection.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ))).scalars())
        tables = [table for table in TABLES_TO_CLEAN if table in existing]
        extra = sorted(existing - set(TABLES_TO_CLEAN) - {"alembic_version"})
        await connection.execute(text(f"TRUNCATE {', '.join(extra + tables)} CASCADE"))
