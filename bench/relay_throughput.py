"""Relay throughput: rows published per second with batched claims versus one row per claim.

The measured run uses the default settings (batches of relay_batch_size rows, relay_concurrency
lanes). The baseline (batch size 1, one lane) claims, publishes, waits for the confirm and commits one row at
a time, which is what a naive outbox poller does. Both runs use the same servers in the same
script, so the ratio is what the batching buys on this machine.

    .venv/bin/python -m bench.relay_throughput [--rows 10000]
"""

from __future__ import annotations

import argparse
import time

from sqlalchemy import text

from bench.common import machine, run, scratch
from dashboard_jobs.consumers.topology import build_topology
from dashboard_jobs.db import create_engine, create_session_factory
from dashboard_jobs.outbox.publisher import ConfirmingPublisher
from dashboard_jobs.outbox.relay import Relay

INSERT_ROWS = text(
    """
    INSERT INTO outbox (id, aggregatetype, aggregateid, type, version, payload, headers)
    SELECT gen_random_uuid(), 'student', 's', 'DASHBOARD_SUMMARY_REFRESH_REQUESTED', 1,
           jsonb_build_object('student_ids', jsonb_build_array(gen_random_uuid()),
                              'reason', 'bench', 'requested_at', now()), '{}'
    FROM generate_series(1, :rows)
    """
)


async def measure(settings, sessions, batch_size: int, rows: int, concurrency: int = 1) -> float:
    async with sessions() as session, session.begin():
        await session.execute(INSERT_ROWS, {"rows": rows})
    publisher = ConfirmingPublisher(settings.rabbitmq_url, build_topology(settings), 10)
    await publisher.connect()
    relay = Relay(sessions, publisher, batch_size=batch_size, interval_seconds=1, concurrency=concurrency)
    started = time.perf_counter()
    published = await relay.drain()
    elapsed = time.perf_counter() - started
    await publisher.close()
    if published != rows:
        raise RuntimeError(f"published {published} rows, expected {rows}")
    async with sessions() as session, session.begin():
        await session.execute(text("DELETE FROM outbox"))
    return rows / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="Outbox rows for the measured run.")
    parser.add_argument("--baseline-rows", type=int, default=1000, help="Rows for the one-by-one baseline.")
    args = parser.parse_args()

    async with scratch() as settings:
        engine = create_engine(settings.database_url, pool_size=settings.relay_concurrency + 1)
        sessions = create_session_factory(engine)
        # Nothing consumes during the measurement; the scratch topology is deleted at the end.
        baseline = await measure(settings, sessions, 1, args.baseline_rows)
        batched = await measure(
            settings, sessions, settings.relay_batch_size, args.rows, settings.relay_concurrency
        )
        await engine.dispose()

    print(f"machine: {machine()}")
    print(f"baseline, batch size 1:  {baseline:8.0f} rows/s ({args.baseline_rows} rows)")
    print(f"relay, batch size {settings.relay_batch_size}, {settings.relay_concurrency} lanes: "
          f"{batched:8.0f} rows/s ({args.rows} rows)")
    print(f"ratio: {batched / baseline:.1f}x")


if __name__ == "__main__":
    run(main)
