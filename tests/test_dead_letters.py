"""Dead-letter operations: the dlq commands as real processes, the admin endpoints, topology mismatches."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from dataclasses import dataclass

import aio_pika
import pytest

from dashboard_jobs.consumers.messages import PermanentMessageError
from dashboard_jobs.consumers.topology import DELIVERY_LIMIT, REPORT_CONSUMER, SUMMARY_CONSUMER, build_topology
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.producers.dead_letters import list_dead_letters, replay_dead_letters
from tests.consumer_fixtures import (  # noqa: F401 - fixtures
    FailingSessions,
    amqp,
    queue_depth,
    retry_settings,
    retry_topology,
    start_worker,
    summary_request,
    take_all,
)
from tests.factories import auth_headers, client, school  # noqa: F401 - fixtures
from tests.helpers import insert_students, scalar, wait_for

SUMMARY_KEY = DashboardSummaryRefreshRequestedV1.TYPE
SUMMARY_COMPLETED = "SELECT count(*) FROM outbox WHERE type = 'DASHBOARD_SUMMARY_REFRESH_COMPLETED'"


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


async def run_command(settings, *arguments: str, stdin: str = "", **environment: str) -> CommandResult:
    """Run `dashboard-jobs ARGUMENTS` as a process without blocking the event loop the worker runs on."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "BROKER_PREFIX": settings.broker_prefix,
        "APP_ENV": "development",
        "LOG_LEVEL": "WARNING",
        "LANG": "fr_FR.UTF-8",
        **environment,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dashboard_jobs.cli", *arguments,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=120)
    return CommandResult(process.returncode, stdout.decode(), stderr.decode())


async def dead_letter_invalid_requests(channel, exchange, spec, count: int) -> list[str]:
    """Publish ``count`` requests with an invalid body and wait until the worker dead-lettered them."""
    message_ids = []
    for _ in range(count):
        message = summary_request([], body=b"{not json")
        await exchange.publish(message, routing_key=SUMMARY_KEY)
        message_ids.append(message.message_id)

    async def all_dead_lettered() -> bool:
        return await queue_depth(channel, spec.dead_letter_queue) == count
    await wait_for(all_dead_lettered, what=f"{count} dead letters")
    return message_ids


async def wait_for_depth(channel, name: str, expected: int) -> None:
    """Wait until queue ``name`` contains ``expected`` ready messages.

    A browse returns its messages when its channel closes, and a quorum queue applies those
    returns shortly after, so a count taken at once can miss them.
    """
    async def reached() -> bool:
        return await queue_depth(channel, name) == expected
    await wait_for(reached, what=f"{expected} messages ready in {name}")


async def browse_ids(settings, name: str) -> list[str]:
    """Return the message ids of queue ``name`` in order, leaving the messages in place."""
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        queue = await (await connection.channel()).get_queue(name)
        ids = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            ids.append(message.message_id)
    finally:
        # Closing the connection returns the messages got without acknowledgement.
        await connection.close()
    return ids


@pytest.fixture
async def worker(session_factory, start_worker):
    return await start_worker(session_factory)


# dlq list


async def test_list_shows_fields_without_removing(settings, clean_db, amqp, retry_topology, worker):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    message_ids = await dead_letter_invalid_requests(channel, exchange, spec, 2)

    english = await run_command(settings, "dlq", "list", "--queue", "summary", "--lang", "en")
    french = await run_command(settings, "dlq", "list")

    assert english.exit_code == 0, english.stderr
    for message_id in message_ids:
        line = next(line for line in english.stdout.splitlines() if message_id in line)
        assert f"type {SUMMARY_KEY}" in line
        assert "reason permanent error" in line
        assert "attempts 1" in line
        assert "age " in line
        assert "error PermanentMessageError: message " in line
        assert "invalid body" in line
    assert f"{spec.dead_letter_queue}:" in english.stdout
    assert "Total: 2 dead letter(s) listed." in english.stdout
    assert french.exit_code == 0, french.stderr
    assert "raison erreur permanente" in french.stdout
    assert "tentatives 1" in french.stdout
    assert "Total : 2 message(s) en dead-letter affiché(s)." in french.stdout
    await wait_for_depth(channel, spec.dead_letter_queue, 2)
    assert await browse_ids(settings, spec.dead_letter_queue) == message_ids


async def test_list_respects_limit(settings, clean_db, amqp, retry_topology, worker):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    message_ids = await dead_letter_invalid_requests(channel, exchange, spec, 3)

    result = await run_command(settings, "dlq", "list", "--limit", "2", "--lang", "en")

    assert result.exit_code == 0, result.stderr
    assert message_ids[0] in result.stdout
    assert message_ids[1] in result.stdout
    assert message_ids[2] not in result.stdout
    await wait_for_depth(channel, spec.dead_letter_queue, 3)


async def test_unknown_queue_names_known_ones(settings, topology):
    result = await run_command(settings, "dlq", "list", "--queue", "nope")

    assert result.exit_code == 2
    assert "'nope'" in result.stderr
    assert "summary" in result.stderr
    assert "parent_report" in result.stderr


# dlq replay


async def test_replay_processes_dead_letter_exactly_once(
    settings, session_factory, clean_db, amqp, retry_topology, start_worker, caplog
):
    caplog.set_level(logging.INFO, logger="dashboard_jobs.consumers")
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    [student] = await insert_students(session_factory, 1)
    sessions = FailingSessions(
        session_factory, failures=1, make_error=lambda: PermanentMessageError("student record is locked for audit")
    )
    await start_worker(sessions)
    message_id = uuid.uuid4()
    original = summary_request([student], message_id)

    await exchange.publish(original, routing_key=SUMMARY_KEY)
    async def dead_lettered() -> bool:
        return await queue_depth(channel, spec.dead_letter_queue) == 1
    await wait_for(dead_lettered, what="the request in the dead-letter queue")

    dry_run = await run_command(settings, "dlq", "replay", "--queue", "summary", "--dry-run")
    assert dry_run.exit_code == 0, dry_run.stderr
    assert f"{message_id}  serait rejoué vers {settings.exchange_name} / {SUMMARY_KEY}" in dry_run.stdout
    assert "Simulation : 1 message(s) seraient rejoués" in dry_run.stdout
    await wait_for_depth(channel, spec.dead_letter_queue, 1)
    assert await scalar(session_factory, "SELECT count(*) FROM inbox") == 0

    replay = await run_command(settings, "dlq", "replay", "--queue", "summary")
    assert replay.exit_code == 0, replay.stderr
    assert f"{message_id}  rejoué vers {settings.exchange_name} / {SUMMARY_KEY}" in replay.stdout

    async def completed() -> bool:
        return await scalar(session_factory, SUMMARY_COMPLETED) == 1
    await wait_for(completed, what="the replayed request processed")
    assert await queue_depth(channel, spec.dead_letter_queue) == 0
    assert await scalar(session_factory, "SELECT count(*) FROM inbox WHERE message_id = :m", m=message_id) == 1
    assert await scalar(session_factory, "SELECT count(*) FROM dashboard_summary") == 1

    # A second copy of the same message, replayed after it was processed, changes nothing.
    copy = summary_request([student], message_id)
    copy.headers.update({"x-original-exchange": settings.exchange_name, "x-original-routing-key": SUMMARY_KEY,
                         "x-dead-letter-reason": "permanent", "x-attempts": 1})
    await channel.default_exchange.publish(copy, routing_key=spec.dead_letter_queue)
    again = await run_command(settings, "dlq", "replay", "--queue", spec.dead_letter_queue, "--lang", "en")
    assert again.exit_code == 0, again.stderr
    assert "Total: 1 message(s) replayed, 0 failed." in again.stdout

    def duplicate_skipped() -> bool:
        return any(
            record.getMessage() == "duplicate summary refresh request acknowledged and skipped"
            and getattr(record, "message_id", None) == str(message_id)
            for record in caplog.records
        )

    async def skipped() -> bool:
        return duplicate_skipped()
    await wait_for(skipped, what="the replayed duplicate acknowledged and skipped")
    assert await scalar(session_factory, SUMMARY_COMPLETED) == 1
    assert await scalar(session_factory, "SELECT count(*) FROM inbox") == 1
    assert await queue_depth(channel, spec.dead_letter_queue) == 0
    assert await queue_depth(channel, spec.name) == 0


async def test_replay_selected_message_ids_only(settings, clean_db, amqp, retry_topology, worker):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    chosen, kept = await dead_letter_invalid_requests(channel, exchange, spec, 2)

    result = await run_command(settings, "dlq", "replay", "--message-id", chosen, "--lang", "en")

    assert result.exit_code == 0, result.stderr
    assert f"{chosen}  replayed to" in result.stdout
    assert kept not in result.stdout
    # The invalid message comes back to the dead-letter queue after its replay, behind the kept one.
    async def back() -> bool:
        return await queue_depth(channel, spec.dead_letter_queue) == 2
    await wait_for(back, what="the replayed invalid message dead-lettered again")
    messages = await take_all(channel, spec.dead_letter_queue)
    assert [m.message_id for m in messages] == [kept, chosen]
    replayed = messages[1]
    assert replayed.headers["x-attempts"] == 1
    assert "x-replayed-at" in replayed.headers


# dlq purge


async def test_purge_needs_confirmation(settings, clean_db, amqp, retry_topology, worker):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    await dead_letter_invalid_requests(channel, exchange, spec, 2)

    declined = await run_command(settings, "dlq", "purge", "--queue", "summary", stdin="n\n")
    no_answer = await run_command(settings, "dlq", "purge", "--queue", "summary")
    assert declined.exit_code == 1
    assert "Purge annulée" in declined.stderr
    assert no_answer.exit_code == 1
    assert await queue_depth(channel, spec.dead_letter_queue) == 2

    purged = await run_command(settings, "dlq", "purge", "--queue", "summary", "--yes")

    assert purged.exit_code == 0, purged.stderr
    assert f"{spec.dead_letter_queue} : 2 message(s) supprimé(s)" in purged.stdout
    assert "Total : 2 message(s) supprimé(s)." in purged.stdout
    assert await queue_depth(channel, spec.dead_letter_queue) == 0


async def test_purge_every_queue_confirmed_interactively(settings, clean_db, amqp, retry_topology, worker):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    await dead_letter_invalid_requests(channel, exchange, spec, 1)

    result = await run_command(settings, "dlq", "purge", "--lang", "en", stdin="y\n")

    assert result.exit_code == 0, result.stderr
    assert "Total: 1 message(s) deleted." in result.stdout
    assert f"{retry_topology.queue(REPORT_CONSUMER).dead_letter_queue}: 0 message(s) deleted" in result.stdout


# Admin endpoints


async def test_admin_lists_dead_letters(settings, client, school, amqp, retry_topology, worker):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    [message_id] = await dead_letter_invalid_requests(channel, exchange, spec, 1)

    response = await client.get("/admin/dead-letters", params={"queue": "summary"}, headers=auth_headers(settings, school.admin))

    assert response.status_code == 200, response.text
    [letter] = response.json()["dead_letters"]
    assert letter["message_id"] == message_id
    assert letter["dead_letter_queue"] == spec.dead_letter_queue
    assert letter["type"] == SUMMARY_KEY
    assert letter["reason"] == "permanent"
    assert letter["attempts"] == 1
    assert letter["age_seconds"] >= 0
    assert letter["error"].startswith("PermanentMessageError: ")
    assert letter["original_exchange"] == settings.exchange_name
    assert letter["original_routing_key"] == SUMMARY_KEY
    await wait_for_depth(channel, spec.dead_letter_queue, 1)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/dead-letters", None),
        ("POST", "/admin/dead-letters/replay", {"dry_run": True}),
        ("POST", "/admin/dead-letters/purge", {"confirm": True}),
    ],
)
@pytest.mark.parametrize("role", ["coach", "parent"])
async def test_non_admin_gets_403(settings, client, school, topology, method, path, body, role):
    principal = getattr(school, role)

    french = await client.request(method, path, json=body, headers=auth_headers(settings, principal))
    english = await client.request(
        method, path, json=body, headers=auth_headers(settings, principal, **{"Accept-Language": "en"})
    )

    assert french.status_code == 403
    assert french.headers["content-type"].startswith("application/problem+json")
    assert french.json()["detail"] == "Cette opération est réservée aux administrateurs."
    assert english.json()["detail"] == "Only admins can perform this operation."


async def test_anonymous_gets_401(client, topology):
    response = await client.get("/admin/dead-letters")

    assert response.status_code == 401


async def test_admin_replay_dry_run_then_replay(settings, client, school, amqp, retry_topology, worker):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    first, second = await dead_letter_invalid_requests(channel, exchange, spec, 2)
    headers = auth_headers(settings, school.admin)

    dry_run = await client.post("/admin/dead-letters/replay", json={"message_ids": [second], "dry_run": True}, headers=headers)
    assert dry_run.status_code == 200, dry_run.text
    assert dry_run.json()["dry_run"] is True
    assert [letter["message_id"] for letter in dry_run.json()["replayed"]] == [second]
    await wait_for_depth(channel, spec.dead_letter_queue, 2)
    assert await browse_ids(settings, spec.dead_letter_queue) == [first, second]
    await wait_for_depth(channel, spec.dead_letter_queue, 2)

    replay = await client.post("/admin/dead-letters/replay", json={"queue": "summary", "limit": 1}, headers=headers)
    assert replay.status_code == 200, replay.text
    assert [letter["message_id"] for letter in replay.json()["replayed"]] == [first]
    assert replay.json()["failed"] == []


async def test_admin_purge_requires_confirm(settings, client, school, amqp, retry_topology, worker):
    channel, exchange = amqp
    spec = retry_topology.queue(SUMMARY_CONSUMER)
    await dead_letter_invalid_requests(channel, exchange, spec, 2)
    headers = auth_headers(settings, school.admin, **{"Accept-Language": "en"})

    unconfirmed = await client.post("/admin/dead-letters/purge", json={"queue": "summary", "confirm": False}, headers=headers)
    assert unconfirmed.status_code == 422
    assert unconfirmed.json()["errors"][0]["field"] == "confirm"
    assert "confirm: true" in unconfirmed.json()["detail"]
    assert await queue_depth(channel, spec.dead_letter_queue) == 2

    purged = await client.post("/admin/dead-letters/purge", json={"queue": "summary", "confirm": True}, headers=headers)
    assert purged.status_code == 200, purged.text
    assert purged.json() == {"purged": {spec.dead_letter_queue: 2}, "total": 2}
    assert await queue_depth(channel, spec.dead_letter_queue) == 0


async def test_admin_unknown_queue_is_422(settings, client, school, topology):
    response = await client.get(
        "/admin/dead-letters", params={"queue": "nope"}, headers=auth_headers(settings, school.admin)
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "queue"
    assert "summary" in response.json()["errors"][0]["message"]


async def test_admin_broker_down_is_503(settings, engine, school):
    import httpx

    from dashboard_jobs.api.app import create_app

    unreachable = settings.model_copy(update={"rabbitmq_url": "amqp://guest:guest@127.0.0.1:1/", "publish_timeout_seconds": 2.0})
    app = create_app(unreachable, engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as unreachable_client:
        response = await unreachable_client.get("/admin/dead-letters", headers=auth_headers(settings, school.admin))

    assert response.status_code == 503
    assert response.json()["detail"] == "RabbitMQ ne répond pas. Réessayez dans quelques instants."


# Topology mismatch


@pytest.mark.parametrize("command", ["worker", "relay"])
async def test_topology_mismatch_exits_3(settings, command):
    prefix = f"{settings.broker_prefix}-mismatch"
    spec = build_topology(settings.model_copy(update={"broker_prefix": prefix})).queue(SUMMARY_CONSUMER)
    queue_name = spec.name
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        # Only the queue type differs from what the worker and the relay declare; classic
        # queues take no delivery limit.
        classic = {**spec.arguments, "x-queue-type": "classic"}
        del classic["x-delivery-limit"]
        await channel.declare_queue(queue_name, durable=True, arguments=classic)

        result = await run_command(settings, command, "--once", BROKER_PREFIX=prefix)

        assert result.exit_code == 3, result.stderr
        assert f"'{queue_name}'" in result.stderr
        assert "'x-queue-type'" in result.stderr
        assert "BROKER_PREFIX" in result.stderr
    finally:
        channel = await connection.channel()
        await channel.queue_delete(queue_name)
        await channel.exchange_delete(f"{prefix}.events")
        await channel.exchange_delete(f"{prefix}.dead-letter")
        await connection.close()


# The delivery limit, the safety net for a message that crashes the worker every time


async def test_delivery_limit_dead_letters_and_replay_finds_origin(settings, amqp, topology):
    channel, exchange = amqp
    spec = topology.queue(SUMMARY_CONSUMER)
    message = summary_request([uuid.uuid4()])
    await exchange.publish(message, routing_key=SUMMARY_KEY)

    # Each crash of a worker holding the message returns it to the queue and counts as one delivery.
    for _ in range(DELIVERY_LIMIT + 5):
        if await queue_depth(channel, spec.dead_letter_queue) == 1:
            break
        connection = await aio_pika.connect(settings.rabbitmq_url)
        queue = await (await connection.channel()).get_queue(spec.name)
        await queue.get(no_ack=False, fail=False)
        await connection.close()
        await wait_for(lambda: _ready_somewhere(channel, spec), what="the message back in a queue")

    [letter] = await list_dead_letters(settings, "summary")
    assert letter.message_id == message.message_id
    assert letter.reason == "delivery_limit"
    assert letter.original_exchange == settings.exchange_name
    assert letter.original_routing_key == SUMMARY_KEY
    await wait_for_depth(channel, spec.dead_letter_queue, 1)

    result = await replay_dead_letters(settings, "summary")

    assert [replayed.message_id for replayed in result.replayed] == [message.message_id]
    await wait_for_depth(channel, spec.name, 1)
    [back] = await take_all(channel, spec.name)
    assert back.message_id == message.message_id
    assert back.headers["x-attempt"] == 1
    assert "x-death" not in back.headers
    assert await queue_depth(channel, spec.dead_letter_queue) == 0


async def _ready_somewhere(channel, spec) -> bool:
    ready = await queue_depth(channel, spec.name) + await queue_depth(channel, spec.dead_letter_queue)
    return ready == 1


async def test_dead_letter_queue_has_delivery_limit(settings, topology):
    """Browsing must not reach the quorum queue's delivery limit, which drops messages on RabbitMQ 4."""
    import aiormq

    spec = topology.consumer_queues[0]
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="x-delivery-limit"):
            await channel.declare_queue(spec.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        await connection.close()
