"""Relay failures: a failing message against an outage, parked rows, and recovery."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from dashboard_jobs import cli
from dashboard_jobs.consumers.topology import SUMMARY_CONSUMER
from dashboard_jobs.db import asyncpg_dsn, create_engine, create_session_factory
from dashboard_jobs.outbox.publisher import BrokerUnavailableError, ConfirmingPublisher, ConfirmTimeoutError, OutboxRow
from dashboard_jobs.outbox.relay import Relay, message_retry_delay
from tests.cli_process import run_cli
from tests.helpers import scalar, wait_for
from tests.tcp_proxy import TcpProxy
from tests.test_relay import add_events, drain_queue

UNROUTABLE_TYPE = "NOBODY_LISTENS_TO_THIS"


async def add_unroutable(session_factory, event_type: str = UNROUTABLE_TYPE) -> uuid.UUID:
    row_id = uuid.uuid4()
    async with session_factory() as session, session.begin():
        await session.execute(text(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, version, payload, headers) "
            "VALUES (:id, 'student', 's', :type, 1, '{}', '{}')"
        ), {"id": row_id, "type": event_type})
    return row_id


async def outbox_row(session_factory, row_id: uuid.UUID) -> dict:
    async with session_factory() as session:
        return dict((await session.execute(text(
            "SELECT attempts, last_error, published_at, failed_at, "
            "       extract(epoch FROM available_at - clock_timestamp()) AS delay_seconds "
            "FROM outbox WHERE id = :id"
        ), {"id": row_id})).mappings().one())


async def make_due(session_factory) -> None:
    async with session_factory() as session, session.begin():
        await session.execute(text("UPDATE outbox SET available_at = now() WHERE published_at IS NULL"))


@pytest.fixture
async def publisher(settings, topology):
    publisher = ConfirmingPublisher(settings.rabbitmq_url, topology, timeout_seconds=10)
    await publisher.connect()
    yield publisher
    await publisher.close()


@pytest.fixture
async def listener_queue(settings, topology):
    """Bind a queue to the unroutable type for the length of a test, so its rows can be published."""
    connection = await aio_pika.connect(settings.rabbitmq_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{settings.broker_prefix}.test-listener", auto_delete=True)

    async def bind() -> aio_pika.abc.AbstractQueue:
        await queue.bind(topology.exchange, routing_key=UNROUTABLE_TYPE)
        return queue

    yield bind
    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()


def test_retry_delay_grows_and_is_capped():
    delays = [message_retry_delay(attempts) for attempts in range(1, 12)]

    assert 2 <= delays[0] <= 3
    assert 4 <= delays[1] <= 5
    assert all(later > earlier for earlier, later in zip(delays[:7], delays[1:8], strict=True))
    assert max(delays) <= 300


async def test_failed_row_keeps_error_and_waits(settings, session_factory, clean_db, publisher):
    row_id = await add_unroutable(session_factory)

    result = await Relay(session_factory, publisher, batch_size=10, interval_seconds=1).publish_batch()

    row = await outbox_row(session_factory, row_id)
    assert (result.failed, result.parked) == (1, 0)
    assert row["attempts"] == 1
    assert row["published_at"] is None
    assert row["failed_at"] is None
    assert "NO_ROUTE" in row["last_error"]
    assert 1 <= row["delay_seconds"] <= 3


async def test_row_parked_after_max_attempts(settings, session_factory, clean_db, publisher, caplog):
    row_id = await add_unroutable(session_factory)
    relay = Relay(session_factory, publisher, batch_size=10, interval_seconds=1, max_attempts=3)

    with caplog.at_level(logging.ERROR, logger="dashboard_jobs.outbox.relay"):
        for _ in range(3):
            await make_due(session_factory)
            await relay.publish_batch()
    await make_due(session_factory)
    after_parking = await relay.publish_batch()

    row = await outbox_row(session_factory, row_id)
    assert row["attempts"] == 3
    assert row["failed_at"] is not None
    assert row["published_at"] is None
    assert after_parking.claimed == 0
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.outbox_id == str(row_id)
    assert record.event_type == UNROUTABLE_TYPE


async def test_bad_row_does_not_block_others(settings, session_factory, clean_db, publisher):
    bad = await add_unroutable(session_factory)
    good = await add_events(session_factory, 3)

    published = await Relay(session_factory, publisher, batch_size=1, interval_seconds=1).drain()

    assert published == 3
    assert sorted(await drain_queue(settings, SUMMARY_CONSUMER, expected=3)) == sorted(map(str, good))
    assert (await outbox_row(session_factory, bad))["attempts"] == 1


async def test_parked_row_is_not_deleted_by_retention(settings, session_factory, clean_db, publisher):
    row_id = await add_unroutable(session_factory)
    relay = Relay(session_factory, publisher, batch_size=10, interval_seconds=1, max_attempts=1)
    await relay.publish_batch()
    async with session_factory() as session, session.begin():
        await session.execute(text("UPDATE outbox SET created_at = now() - interval '30 days', "
                                   "failed_at = now() - interval '30 days'"))

    await relay.delete_expired()

    assert (await outbox_row(session_factory, row_id))["failed_at"] is not None


async def test_outage_mid_batch_counts_no_attempt(settings, session_factory, clean_db, publisher):
    ids = await add_events(session_factory, 4)
    confirmed, refused = ids[:2], ids[2:]

    class FailingMidBatch:
        async def publish(self, row: OutboxRow) -> None:
            if row.id in refused:
                raise BrokerUnavailableError("connection reset")
            await publisher.publish(row)

    with pytest.raises(BrokerUnavailableError):
        await Relay(session_factory, FailingMidBatch(), batch_size=10, interval_seconds=1).publish_batch()

    for row_id in confirmed:
        assert (await outbox_row(session_factory, row_id))["published_at"] is not None
    for row_id in refused:
        row = await outbox_row(session_factory, row_id)
        assert row["published_at"] is None
        assert row["attempts"] == 0
        assert row["last_error"] is None
        assert row["delay_seconds"] <= 0


async def test_confirm_timeout_counts_an_attempt(settings, session_factory, clean_db):
    [row_id] = await add_events(session_factory, 1)

    class SlowBroker:
        async def publish(self, row: OutboxRow) -> None:
            raise ConfirmTimeoutError("no publisher confirm within 10 s")

    result = await Relay(session_factory, SlowBroker(), batch_size=10, interval_seconds=1).publish_batch()

    row = await outbox_row(session_factory, row_id)
    assert result.failed == 1
    assert row["attempts"] == 1
    assert row["last_error"].startswith("ConfirmTimeoutError")


async def test_cut_connection_is_an_outage(settings, topology):
    async with TcpProxy("127.0.0.1", _port(settings.rabbitmq_url)) as proxy:
        publisher = ConfirmingPublisher(_via(settings.rabbitmq_url, proxy.port), topology, timeout_seconds=3)
        await publisher.connect()
        try:
            await proxy.cut()
            row = OutboxRow(uuid.uuid4(), 1, UNROUTABLE_TYPE, 1, {}, {}, datetime.now(UTC))

            with pytest.raises(BrokerUnavailableError):
                await publisher.publish(row)
        finally:
            await publisher.close()


async def test_connect_refused_is_an_outage(settings, topology):
    async with TcpProxy("127.0.0.1", _port(settings.rabbitmq_url)) as proxy:
        await proxy.cut()
        publisher = ConfirmingPublisher(_via(settings.rabbitmq_url, proxy.port), topology, timeout_seconds=3)

        with pytest.raises(BrokerUnavailableError):
            await publisher.connect()


async def test_relay_survives_broker_outage(settings, session_factory, clean_db, topology):
    async with TcpProxy("127.0.0.1", _port(settings.rabbitmq_url)) as proxy:
        publisher = ConfirmingPublisher(_via(settings.rabbitmq_url, proxy.port), topology, timeout_seconds=3)
        relay = Relay(session_factory, publisher, batch_size=50, interval_seconds=0.2)
        task = asyncio.create_task(relay.run())
        try:
            before = await add_events(session_factory, 5)
            await wait_for(lambda: _unpublished(session_factory, 0), timeout=30, what="first rows published")

            await proxy.cut()
            during = await add_events(session_factory, 5)
            await wait_for(lambda: _relay_in_outage(relay, "broker"), timeout=30, what="relay to see the outage")
            assert not (await relay.health()).ready
            assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE attempts > 0 AND published_at IS NULL") == 0
            assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE last_error IS NOT NULL") == 0

            await proxy.restore()
            await wait_for(lambda: _unpublished(session_factory, 0), timeout=60, what="backlog published after restore")
            await wait_for(lambda: _healthy(relay), timeout=30, what="relay health back to ready")
        finally:
            relay.stop()
            await asyncio.wait_for(task, 30)
            await publisher.close()

    assert not task.cancelled()
    assert task.exception() is None
    assert relay.outage is None
    received = await drain_queue(settings, SUMMARY_CONSUMER, expected=10)
    assert set(map(str, before + during)) <= set(received)
    assert await scalar(session_factory, "SELECT max(attempts) FROM outbox") == 1


async def test_relay_survives_database_outage(settings, session_factory, clean_db, publisher):
    async with database_proxy(settings.database_url) as proxy:
        proxied_url = _database_via(settings.database_url, proxy.port)
        engine = create_engine(proxied_url, pool_size=2)
        # A long poll interval: after the outage only a NOTIFY on the re-established
        # LISTEN connection can wake the relay in time.
        relay = Relay(create_session_factory(engine), publisher, batch_size=50, interval_seconds=3600,
                      listen_dsn=asyncpg_dsn(proxied_url))
        task = asyncio.create_task(relay.run())
        try:
            await add_events(session_factory, 2)
            await wait_for(lambda: _unpublished(session_factory, 0), timeout=30, what="first rows published")

            await proxy.cut()
            await wait_for(lambda: _relay_in_outage(relay, "database"), timeout=30, what="relay to see the outage")
            await add_events(session_factory, 3)
            assert not task.done()

            await proxy.restore()
            await wait_for(lambda: _unpublished(session_factory, 0), timeout=60, what="backlog published after restore")
            await wait_for(lambda: _listening(relay), timeout=30, what="LISTEN connection re-established")
            await add_events(session_factory, 1)
            await wait_for(lambda: _unpublished(session_factory, 0), timeout=30, what="row published on NOTIFY")
        finally:
            relay.stop()
            await asyncio.wait_for(task, 30)
            await engine.dispose()

    assert task.exception() is None
    assert await scalar(session_factory, "SELECT count(*) FROM outbox WHERE attempts <> 1") == 0


async def test_status_prints_counts_and_errors(settings, session_factory, clean_db, publisher):
    relay = Relay(session_factory, publisher, batch_size=10, interval_seconds=1)
    await add_events(session_factory, 5)
    delayed = await add_unroutable(session_factory)
    parked_type = "ANOTHER_UNROUTABLE_TYPE"
    parked = await add_unroutable(session_factory, parked_type)
    await relay.drain()
    due = await add_events(session_factory, 3)
    async with session_factory() as session, session.begin():
        await session.execute(text("UPDATE outbox SET failed_at = now() WHERE id = :id"), {"id": parked})
        # The retry delay is seconds long; make it outlast the commands' start-up.
        await session.execute(text("UPDATE outbox SET available_at = now() + interval '1 hour' WHERE id = :id"),
                              {"id": delayed})
        await session.execute(text("UPDATE outbox SET created_at = now() - interval '2 hours' WHERE id = :id"),
                              {"id": due[0]})

    french = run_cli(settings, "outbox", "status")
    english = run_cli(settings, "outbox", "status", "--lang", "en")

    assert french.returncode == 0, french.stderr
    assert "Messages en attente de publication : 4" in french.stdout
    assert "  à publier maintenant : 3" in french.stdout
    assert "  en attente d'un nouvel essai : 1" in french.stdout
    assert f"Messages mis de côté après {settings.outbox_max_attempts} échecs : 1" in french.stdout
    assert "Messages publiés conservés (7 j) : 5" in french.stdout
    assert "Plus ancien message en attente : 2 h" in french.stdout
    assert f"  {parked_type}  PublishError  1 message(s), 1 mis de côté" in french.stdout
    assert f"  {UNROUTABLE_TYPE}  PublishError  1 message(s)\n" in french.stdout
    assert "NO_ROUTE" in french.stdout
    assert "dashboard-jobs outbox retry --all-parked" in french.stdout
    assert english.returncode == 0, english.stderr
    assert "Messages waiting to be published: 4" in english.stdout
    assert f"Messages parked after {settings.outbox_max_attempts} failures: 1" in english.stdout
    assert "Oldest waiting message: 2 h" in english.stdout
    assert (await outbox_row(session_factory, delayed))["failed_at"] is None


async def test_status_of_empty_outbox(settings, clean_db):
    result = run_cli(settings, "outbox", "status", "--lang", "en")

    assert result.returncode == 0, result.stderr
    assert "Messages waiting to be published: 0" in result.stdout
    assert "Oldest waiting message: none" in result.stdout
    assert "No publish errors." in result.stdout


async def test_retry_brings_parked_row_back(settings, session_factory, clean_db, publisher, listener_queue):
    row_id = await add_unroutable(session_factory)
    relay = Relay(session_factory, publisher, batch_size=10, interval_seconds=1, max_attempts=1)
    await relay.drain()
    assert (await outbox_row(session_factory, row_id))["failed_at"] is not None
    queue = await listener_queue()

    result = run_cli(settings, "outbox", "retry", "--id", str(row_id))
    published = await relay.drain()

    assert result.returncode == 0, result.stderr
    assert "1 message(s) remis en file" in result.stdout
    assert published == 1
    row = await outbox_row(session_factory, row_id)
    assert row["failed_at"] is None
    assert row["published_at"] is not None
    assert row["attempts"] == 2
    message = await queue.get(timeout=10)
    assert message.message_id == str(row_id)


async def test_retry_all_parked(settings, session_factory, clean_db, publisher):
    ids = [await add_unroutable(session_factory) for _ in range(3)]
    await Relay(session_factory, publisher, batch_size=10, interval_seconds=1, max_attempts=1).drain()

    result = run_cli(settings, "outbox", "retry", "--all-parked", "--lang", "en")

    assert result.returncode == 0, result.stderr
    assert "3 message(s) sent back to the relay" in result.stdout
    for row_id in ids:
        row = await outbox_row(session_factory, row_id)
        assert row["failed_at"] is None
        assert row["attempts"] == 1
        assert row["delay_seconds"] <= 0


async def test_retry_reports_unknown_and_pending_ids(settings, session_factory, clean_db):
    [pending] = await add_events(session_factory, 1)
    unknown = uuid.uuid4()

    result = run_cli(settings, "outbox", "retry", "--id", str(pending), "--id", str(unknown), "--lang", "en")

    assert result.returncode == 1
    assert "0 message(s) sent back to the relay" in result.stdout
    assert f"message {pending} not retried: it is not parked (state: pending)" in result.stdout
    assert f"message {unknown} not found in the outbox" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["outbox", "retry"], "give --id"),
        (["outbox", "retry", "--all-parked", "--id", str(uuid.UUID(int=1))], "give --id"),
        (["outbox", "retry", "--id", "not-a-uuid"], "'not-a-uuid' is not a UUID"),
        (["outbox", "status", "--lang", "de"], "'de' is not a supported language"),
    ],
)
def test_outbox_command_usage_errors(settings, monkeypatch, arguments, expected):
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)

    result = CliRunner().invoke(cli.app, arguments, env={"DATABASE_URL": settings.database_url})

    assert result.exit_code == 2
    assert expected in result.output


async def _unpublished(session_factory, expected: int) -> bool:
    return await scalar(session_factory, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == expected


async def _relay_in_outage(relay: Relay, source: str) -> bool:
    return relay.outage is not None and relay.outage.startswith(source)


async def _healthy(relay: Relay) -> bool:
    return (await relay.health()).ready


async def _listening(relay: Relay) -> bool:
    listener = relay._listener  # noqa: SLF001 - the test checks the reconnection itself
    return listener is not None and not listener.is_closed()


def _port(url: str) -> int:
    from yarl import URL

    return URL(url).port or 5672


def _via(url: str, port: int) -> str:
    from yarl import URL

    return str(URL(url).with_host("127.0.0.1").with_port(port))


def database_proxy(url: str) -> TcpProxy:
    """Return a proxy to the database of ``url``, over TCP or through its Unix socket."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    socket_dir = parsed.query.get("host")
    if socket_dir:
        return TcpProxy.to_unix_socket(f"{socket_dir}/.s.PGSQL.{parsed.port or 5432}")
    return TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)


def _database_via(url: str, port: int) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    query = {key: value for key, value in parsed.query.items() if key != "host"}
    return parsed.set(host="127.0.0.1", port=port, query=query).render_as_string(hide_password=False)
