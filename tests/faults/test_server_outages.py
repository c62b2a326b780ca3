"""The broker and the database go away during a burst of API writes, then come back."""

from __future__ import annotations

import asyncio

from yarl import URL

from tests.faults.audit import assert_nothing_lost_or_doubled, settle_and_audit, unapplied_deliveries
from tests.faults.conftest import load_test_school
from tests.faults.workload import CoachWrites, writes_without_one_request
from tests.helpers import scalar, wait_for
from tests.tcp_proxy import TcpProxy


async def test_broker_cut_during_api_writes(settings, session_factory, school, make_pipeline):
    """Cut RabbitMQ away from the relay and the worker while coaches keep writing, then restore it.

    The API never talks to the broker, so every write succeeds during the outage. The
    requests wait in the outbox and are all applied once the broker is back.
    """
    broker = URL(settings.rabbitmq_url)
    async with TcpProxy(broker.host, broker.port) as proxy:
        pipeline = make_pipeline(RABBITMQ_URL=str(broker.with_host("127.0.0.1").with_port(proxy.port)))
        pipeline.start("worker")
        pipeline.start("relay")
        pipeline.start_api()
        await pipeline.wait_api_ready()
        await pipeline.wait_worker_consuming()

        async def requests_waiting_in_outbox() -> bool:
            pipeline.check_alive()
            return await scalar(session_factory, "SELECT count(*) FROM outbox WHERE published_at IS NULL") >= 20

        async with CoachWrites(pipeline.api_url, settings, school) as writes:
            await writes.wait_for_more(20, check_alive=pipeline.check_alive)
            await proxy.cut()
            await writes.wait_for_more(40, check_alive=pipeline.check_alive)
            await wait_for(requests_waiting_in_outbox, 30, "writes to wait in the outbox")
            await proxy.restore()
            await writes.wait_for_more(20, check_alive=pipeline.check_alive)

        audit = await settle_and_audit(session_factory, check_alive=pipeline.check_alive)

        assert writes.failed == [], "API writes failed while only the broker was away"
        assert await writes_without_one_request(session_factory, writes.outcomes) == {}
        assert audit.refresh_requests == len(writes.succeeded)
        assert_nothing_lost_or_doubled(audit)
        await pipeline.stop_all_cleanly()
    assert await unapplied_deliveries(settings, session_factory) == {}


async def test_postgres_restart_during_api_writes(private_database, topology, make_pipeline):
    """Crash and restart a private PostgreSQL while coaches keep writing through the API.

    Writes that arrive while the database is down may fail, but every acknowledged write
    has its refresh request, and every request is applied once after the restart.
    """
    database = private_database
    school = await load_test_school(database.settings.database_url, database.sessions)
    pipeline = make_pipeline(database.settings)
    pipeline.start("worker")
    pipeline.start("relay")
    pipeline.start_api()
    await pipeline.wait_api_ready()
    await pipeline.wait_worker_consuming()

    async with CoachWrites(pipeline.api_url, database.settings, school) as writes:

        async def writes_failing() -> bool:
            pipeline.check_alive()
            return len(writes.failed) >= 3

        await writes.wait_for_more(30, check_alive=pipeline.check_alive)
        await asyncio.to_thread(database.server.crash)
        await wait_for(writes_failing, 30, "writes to fail on the stopped database")
        await asyncio.to_thread(database.server.start)
        await writes.wait_for_more(30, timeout=60, check_alive=pipeline.check_alive)

    audit = await settle_and_audit(database.sessions, check_alive=pipeline.check_alive)

    assert await writes_without_one_request(database.sessions, writes.outcomes) == {}
    assert_nothing_lost_or_doubled(audit)
    await pipeline.stop_all_cleanly()
    assert await unapplied_deliveries(database.settings, database.sessions) == {}
