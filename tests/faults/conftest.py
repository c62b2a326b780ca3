"""Fixtures of the fault tests: real processes, a loaded school, and their clean-up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.db import create_engine, create_session_factory, upgrade_database_async
from dashboard_jobs.demo.run import create_database
from dashboard_jobs.demo.school import School, load_school
from dashboard_jobs.domain.summary import rebuild_all_summaries
from dashboard_jobs.settings import Settings
from tests.faults.broker import PublishTap
from tests.faults.postgres import PrivatePostgres
from tests.faults.processes import Pipeline

FAULTS_DIRECTORY = Path(__file__).resolve().parent
SCHOOL_STUDENTS = 60
SCHOOL_SEED = 11


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if FAULTS_DIRECTORY in item.path.parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def make_pipeline(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Pipeline]]:
    """Return a factory of pipelines whose processes are all stopped after the test.

    ``make_pipeline(settings=None, **environment)`` builds a Pipeline for the run's settings
    (or the given ones), with ``environment`` added to every process's environment.
    """
    pipelines: list[Pipeline] = []

    def make(pipeline_settings: Settings | None = None, **environment: str) -> Pipeline:
        log_dir = tmp_path / f"logs-{len(pipelines)}"
        # Printed so that a failing test's captured output shows where the process logs are.
        print(f"process logs: {log_dir}")
        pipeline = Pipeline(pipeline_settings or settings, log_dir, **environment)
        pipelines.append(pipeline)
        return pipeline

    yield make
    for pipeline in pipelines:
        pipeline.close()


@pytest.fixture
def pipeline(make_pipeline: Callable[..., Pipeline]) -> Pipeline:
    return make_pipeline()


async def load_test_school(
    database_url: str, sessions: async_sessionmaker[AsyncSession], students: int = SCHOOL_STUDENTS
) -> School:
    """Replace the database's school with a generated one and compute every summary."""
    school = await load_school(database_url, students=students, seed=SCHOOL_SEED, today=date.today())
    await rebuild_all_summaries(sessions, batch_size=500)
    return school


@pytest.fixture
async def school(settings: Settings, session_factory, clean_db: None, topology) -> School:
    """A school of SCHOOL_STUDENTS students in the run's database, with empty queues."""
    return await load_test_school(settings.database_url, session_factory)


@pytest.fixture
async def publish_tap(settings: Settings, topology) -> AsyncIterator[PublishTap]:
    """Return a tap that counts every refresh request the relay publishes, deleted after the test."""
    tap = PublishTap(settings)
    await tap.declare()
    yield tap
    await tap.delete()


@dataclass(frozen=True)
class PrivateDatabase:
    """A migrated database on a private PostgreSQL, with the run's settings pointing at it."""

    server: PrivatePostgres
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture
async def private_database(settings: Settings, tmp_path: Path) -> AsyncIterator[PrivateDatabase]:
    server = await asyncio.to_thread(PrivatePostgres, tmp_path / "postgres")
    try:
        database_url = await create_database(server.url("postgres"), "dashboard_faults")
        await upgrade_database_async(database_url)
        engine = create_engine(database_url, pool_size=4)
        try:
            yield PrivateDatabase(
                server=server,
                settings=settings.model_copy(update={"database_url": database_url}),
                sessions=create_session_factory(engine),
            )
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(server.cleanup)
