"""Run the demo: load a school, start api, relay and worker, drive coach writes, audit."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import aio_pika
import asyncpg
import httpx
from sqlalchemy.engine import make_url

from dashboard_jobs.api.auth import mint_token
from dashboard_jobs.consumers.topology import SUMMARY_CONSUMER, build_topology, delete_topology_at
from dashboard_jobs.db import asyncpg_dsn, create_engine, create_session_factory, upgrade_database_async
from dashboard_jobs.demo import audit
from dashboard_jobs.demo.processes import ProcessGroup, free_port
from dashboard_jobs.demo.report import DemoReport
from dashboard_jobs.demo.school import load_school
from dashboard_jobs.demo.workload import drive_workload
from dashboard_jobs.domain.summary import rebuild_all_summaries
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60.0
SETTLE_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class DemoOptions:
    students: int
    rate: float
    duration: float
    seed: int
    database_name: str
    log_dir: Path


async def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url`` unless it exists; return its URL."""
    connection = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def run_demo(settings: Settings, server_url: str, options: DemoOptions) -> DemoReport:
    database_url = await create_database(server_url, options.database_name)
    await upgrade_database_async(database_url)
    demo_settings = settings.model_copy(update={
        "database_url": database_url,
        "broker_prefix": f"demo-{uuid.uuid4().hex[:8]}",
    })

    started = time.perf_counter()
    school = await load_school(
        asyncpg_dsn(database_url), students=options.students, seed=options.seed, today=date.today()
    )
    load_seconds = time.perf_counter() - started

    engine = create_engine(database_url, pool_size=4)
    sessions = create_session_factory(engine)
    started = time.perf_counter()
    await rebuild_all_summaries(sessions, settings.summary_rebuild_batch_size)
    rebuild_seconds = time.perf_counter() - started
    log.info("school loaded", extra={"students": options.students, "load_seconds": round(load_seconds, 2),
                                      "rebuild_seconds": round(rebuild_seconds, 2)})

    port = free_port()
    group = ProcessGroup(
        environment={
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": settings.rabbitmq_url,
            "BROKER_PREFIX": demo_settings.broker_prefix,
            "APP_ENV": settings.app_env.value,
            "JWT_SECRET": settings.require_jwt_secret(),
            "LOG_LEVEL": settings.log_level,
        },
        log_dir=options.log_dir,
    )
    try:
        group.start("worker", "worker")
        group.start("relay", "relay")
        group.start("api", "api", "--host", "127.0.0.1", "--port", str(port))
        base_url = f"http://127.0.0.1:{port}"
        await _wait_ready(group, demo_settings, base_url)

        run_started_at = datetime.now(UTC)
        tokens = {coach_id: mint_token(settings, coach_id, "coach", ttl_seconds=3600)
                  for coach_id, _ in school.coaches}
        workload = await drive_workload(
            base_url, tokens, school.coaches,
            rate=options.rate, duration=options.duration, seed=options.seed,
        )
        await _wait_settled(group, sessions, workload.touched_student_ids)

        report = await _build_report(
            sessions, demo_settings, options, workload, run_started_at, load_seconds, rebuild_seconds
        )
    finally:
        group.stop_all()
        await _delete_topology(demo_settings)
        await engine.dispose()
    return report


async def _wait_ready(group: ProcessGroup, settings: Settings, base_url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    queue_name = settings.queue_name(SUMMARY_CONSUMER)
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            group.check_alive()
            api_ready = False
            try:
                api_ready = (await client.get(f"{base_url}/health/ready")).status_code == 200
            except httpx.HTTPError:
                pass
            if api_ready and await _consumer_count(settings, queue_name) > 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"api, relay and worker were not ready after {READY_TIMEOUT_SECONDS:.0f} s; "
                    f"see the logs in {group.log_dir}"
                )
            await asyncio.sleep(0.2)


async def _consumer_count(settings: Settings, queue_name: str) -> int:
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue_name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return 0
        return declared.declaration_result.consumer_count
    finally:
        await connection.close()


async def _dead_letter_count(settings: Settings) -> int:
    topology = build_topology(settings)
    connection = await aio_pika.connect(settings.rabbitmq_url)
    total = 0
    try:
        for spec in topology.queues:
            if spec.dead_letter_queue is None:
                continue
            channel = await connection.channel()
            declared = await channel.declare_queue(spec.dead_letter_queue, passive=True)
            total += declared.declaration_result.message_count
            await channel.close()
    finally:
        await connection.close()
    return total


async def _wait_settled(group: ProcessGroup, sessions, touched: set[uuid.UUID]) -> None:
    """Wait until the outbox is drained and every touched summary is newer than its last write."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while True:
        group.check_alive()
        async with sessions() as session:
            backlog = await audit.outbox_backlog(session)
            stale = await audit.stale_summaries(session, sorted(touched))
        if backlog == 0 and not stale:
            return
        if time.monotonic() > deadline:
            log.error("pipeline did not settle", extra={"outbox_backlog": backlog, "stale_summaries": len(stale)})
            return
        await asyncio.sleep(0.1)


async def _build_report(sessions, settings, options, workload, run_started_at, load_seconds, rebuild_seconds) -> DemoReport:
    async with sessions() as session:
        latencies = await audit.refresh_latencies(session, run_started_at)
        backlog = await audit.outbox_backlog(session)
        stale = await audit.stale_summaries(session, sorted(workload.touched_student_ids))
        published = await audit.events_published(session, run_started_at)
    async with sessions() as session:
        mismatches, checked = await audit.summary_mismatches(session)

    return DemoReport(
        students=options.students,
        load_seconds=load_seconds,
        rebuild_seconds=rebuild_seconds,
        writes_attempted=workload.attempted,
        writes_succeeded=workload.succeeded,
        writes_failed=workload.failed,
        writes_scheduled=workload.scheduled,
        writes_not_sent=workload.not_sent,
        writes_late=workload.sent_late,
        workload_seconds=workload.elapsed,
        events_published=published,
        requests=latencies.requests,
        summaries_refreshed=latencies.recomputations,
        latency_p50_ms=latencies.p50_ms,
        latency_p95_ms=latencies.p95_ms,
        latency_p99_ms=latencies.p99_ms,
        dead_letters=await _dead_letter_count(settings),
        outbox_backlog=backlog,
        stale_summaries=len(stale),
        mismatched_summaries=len(mismatches),
        checked_summaries=checked,
    )


async def _delete_topology(settings: Settings) -> None:
    try:
        await delete_topology_at(settings.rabbitmq_url, build_topology(settings))
    except (OSError, aio_pika.exceptions.AMQPError) as error:
        log.error("could not delete the demo's queues", extra={"prefix": settings.broker_prefix, "error": str(error)})
