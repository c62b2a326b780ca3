"""Recovery without a restart: the API and every engine after the database went away and came back."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from dashboard_jobs.api.app import create_app
from dashboard_jobs.db import create_engine, create_session_factory
from dashboard_jobs.outbox.relay import is_database_outage
from tests.test_relay_failures import _database_via, database_proxy


async def select_one(sessions) -> int:
    async with sessions() as session:
        return (await session.execute(text("SELECT 1"))).scalar_one()


async def test_engine_recovers_after_database_outage(settings):
    async with database_proxy(settings.database_url) as proxy:
        engine = create_engine(_database_via(settings.database_url, proxy.port), pool_size=2)
        sessions = create_session_factory(engine)
        try:
            assert await select_one(sessions) == 1

            await proxy.cut()
            # A broken pooled connection raises DBAPIError, a refused new one OSError.
            with pytest.raises((DBAPIError, OSError)) as outage:
                await select_one(sessions)
            await proxy.restore()
            # pool_pre_ping replaces the pooled connection the outage broke.
            recovered = await select_one(sessions)
        finally:
            await engine.dispose()

    assert is_database_outage(outage.value)
    assert recovered == 1


async def test_api_ready_again_after_database_outage(settings):
    async with database_proxy(settings.database_url) as proxy:
        engine = create_engine(_database_via(settings.database_url, proxy.port), pool_size=2)
        app = create_app(settings, engine=engine)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
                before = await client.get("/health/ready")
                await proxy.cut()
                during = await client.get("/health/ready")
                await proxy.restore()
                after = await client.get("/health/ready")
        finally:
            await engine.dispose()

    assert before.status_code == 200
    assert during.status_code == 503
    assert after.status_code == 200


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (sa_exc.OperationalError("SELECT 1", {}, OSError("connection refused")), True),
        (sa_exc.DBAPIError("SELECT 1", {}, Exception("terminated"), connection_invalidated=True), True),
        (ConnectionRefusedError(111, "Connect call failed"), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (sa_exc.TimeoutError("QueuePool limit reached"), True),
        (sa_exc.ProgrammingError("SELEC 1", {}, Exception("syntax error")), False),
        (sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (ValueError("invalid literal"), False),
    ],
)
def test_database_outage_classification(error, expected):
    assert is_database_outage(error) is expected
