"""Shared fixtures: a private database and private broker names for each test run.

Tests talk to real servers. DATABASE_URL (a connection allowed to create databases) and
RABBITMQ_URL select them. Without DATABASE_URL, testcontainers starts PostgreSQL when a
Docker engine responds, and otherwise an embedded PostgreSQL runs in .data/postgres-test.
RABBITMQ_URL defaults to the local broker; testcontainers starts one only when that
broker does not answer and Docker does.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dashboard_jobs.consumers.topology import build_topology, declare_topology, delete_topology_at
from dashboard_jobs.db import asyncpg_dsn, create_engine, create_session_factory, upgrade_database
from dashboard_jobs.runtime import BrokerUnavailableError, check_broker, database_url_or_embedded
from dashboard_jobs.settings import DEFAULT_RABBITMQ_URL, Settings

EMBEDDED_DATA_DIR = Path(__file__).resolve().parents[1] / ".data" / "postgres-test"


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"
        return False
    return True


def _broker_answers(url: str) -> bool:
    try:
        asyncio.run(check_broker(url, timeout_seconds=3))
    except BrokerUnavailableError:
        return False
    return True


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    """Return (admin database URL, RabbitMQ URL) of the servers the run uses."""
    with ExitStack() as stack:
        admin_url = os.environ.get("DATABASE_URL")
        rabbit_url = os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
        docker = None if admin_url and _broker_answers(rabbit_url) else _docker_available()

        if not admin_url and docker:
            from testcontainers.postgres import PostgresContainer

            postgres = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
            admin_url = postgres.get_connection_url()
        elif not admin_url:
            admin_url = stack.enter_context(database_url_or_embedded(None, EMBEDDED_DATA_DIR))

        if not _broker_answers(rabbit_url):
            if not docker:
                pytest.exit(f"RabbitMQ does not answer at {rabbit_url}; start it or set RABBITMQ_URL.", returncode=2)
            from testcontainers.rabbitmq import RabbitMqContainer

            rabbit = stack.enter_context(RabbitMqContainer("rabbitmq:3.13-management"))
            params = rabbit.get_connection_params()
            rabbit_url = f"amqp://guest:guest@{params.host}:{params.port}/"

        yield admin_url, rabbit_url


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
    await delete_topology_at(settings.rabbitmq_url, build_topology(settings))


@pytest.fixture
async def topology(settings: Settings, broker_cleanup: None):
    """Declare the run's topology and purge its queues (retry and dead-letter queues too), so each test starts empty."""
    topology = build_topology(settings)
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, topology)
        for name in topology.queue_names():
            await (await channel.get_queue(name)).purge()
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
