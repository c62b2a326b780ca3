"""Summary consumer: requests processed per second and recomputations, coalesced versus not.

A burst of refresh requests (each for 1 to 3 of a few hundred students) is queued, then the
worker drains it. The baseline processes one request per transaction (no coalescing window,
batches of one message); the measured run uses the default window and batch size. Both run
against the same servers in the same script.

    .venv/bin/python -m bench.summary_coalescing [--requests 3000] [--students 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime

import aio_pika
from sqlalchemy import text

from bench.common import machine, run, scratch
from dashboard_jobs.consumers.app import build_worker
from dashboard_jobs.consumers.topology import build_topology, declare_topology
from dashboard_jobs.contracts.base import VERSION_HEADER
from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.db import create_engine, create_session_factory


async def queue_burst(settings, student_ids, requests: int, seed: int) -> None:
    rng = random.Random(seed)
    connection = await aio_pika.connect(settings.rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await declare_topology(channel, build_topology(settings))
    for start in range(0, requests, 500):
        await asyncio.gather(*(
            exchange.publish(
                aio_pika.Message(
                    json.dumps({
                        "student_ids": [str(s) for s in rng.sample(student_ids, rng.randint(1, 3))],
                        "reason": "bench",
                        "requested_at": datetime.now(UTC).isoformat(),
                    }).encode(),
                    message_id=str(uuid.uuid4()),
                    type=DashboardSummaryRefreshRequestedV1.TYPE,
                    headers={VERSION_HEADER: 1},
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=DashboardSummaryRefreshRequestedV1.TYPE,
            )
            for _ in range(min(500, requests - start))
        ))
    await connection.close()


async def measure(settings, student_ids, requests: int) -> tuple[float, int]:
    engine = create_engine(settings.database_url, pool_size=4)
    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        await session.execute(text("TRUNCATE inbox, outbox, dashboard_summary"))
    await queue_burst(settings, student_ids, requests, seed=1)

    worker = build_worker(settings, sessions)
    started = time.perf_counter()
    await worker.broker.start()
    while worker.summary.requests < requests:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await worker.broker.stop()
    await engine.dispose()
    return requests / elapsed, worker.summary.recomputations


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--baseline-requests", type=int, default=1000)
    parser.add_argument("--students", type=int, default=300)
    args = parser.parse_args()

    async with scratch() as settings:
        student_ids = sorted(uuid.uuid4() for _ in range(args.students))
        engine = create_engine(settings.database_url, pool_size=1)
        async with create_session_factory(engine)() as session, session.begin():
            await session.execute(text(
                "INSERT INTO students (id, first_name, last_name, grade) "
                "SELECT unnest(CAST(:ids AS uuid[])), 'Léa', 'Bernard', '4e'"), {"ids": student_ids})
        await engine.dispose()

        baseline_settings = settings.model_copy(update={"summary_coalesce_seconds": 0.0, "summary_max_batch_messages": 1})
        baseline_rate, baseline_recomputations = await measure(baseline_settings, student_ids, args.baseline_requests)
        rate, recomputations = await measure(settings, student_ids, args.requests)

    print(f"machine: {machine()}")
    print(f"baseline, one request per transaction: {baseline_rate:7.0f} requests/s, "
          f"{baseline_recomputations / args.baseline_requests:.2f} recomputations per request")
    print(f"coalesced (window {settings.summary_coalesce_seconds * 1000:.0f} ms, batch {settings.summary_max_batch_messages}): "
          f"{rate:7.0f} requests/s, {recomputations / args.requests:.2f} recomputations per request")
    print(f"throughput ratio: {rate / baseline_rate:.1f}x; recomputations ratio: "
          f"{(baseline_recomputations / args.baseline_requests) / (recomputations / args.requests):.1f}x fewer")


if __name__ == "__main__":
    run(main)
