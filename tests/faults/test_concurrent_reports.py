"""API writes racing a bulk report request, with the real api, relay and worker processes."""

from __future__ import annotations

import asyncio

import httpx

from dashboard_jobs.api.auth import mint_token
from dashboard_jobs.domain.periods import previous_period, utc_now
from tests.faults.audit import assert_nothing_lost_or_doubled, settle_and_audit, unapplied_deliveries
from tests.faults.workload import CoachWrites, writes_without_one_request

PARALLEL_WRITES = 20
BULK_REPORTS = 30
BULK_WAIT_SECONDS = 20
# asyncpg raises this when two coroutines use one connection at the same time.
CONNECTION_MISUSE = "another operation is in progress"


async def test_parallel_writes_during_bulk_report_request(settings, school, session_factory, pipeline):
    """20 coach writes sent while an admin's bulk request of 30 reports waits for the worker."""
    pipeline.start("worker")
    pipeline.start("relay")
    pipeline.start_api()
    await pipeline.wait_api_ready()
    await pipeline.wait_worker_consuming()
    report_students = school.student_ids[:BULK_REPORTS]
    bulk_body = {
        "student_ids": [str(student_id) for student_id in report_students],
        "period": str(previous_period(utc_now(), settings.timezone)),
    }
    admin = {"Authorization": f"Bearer {mint_token(settings, school.admin_id, 'admin')}"}

    async with (
        CoachWrites(pipeline.api_url, settings, school, writers=0) as writes,
        httpx.AsyncClient(base_url=pipeline.api_url, timeout=BULK_WAIT_SECONDS + 10, trust_env=False) as client,
    ):
        bulk, *_ = await asyncio.gather(
            client.post("/agents/reporter/bulk", params={"wait": BULK_WAIT_SECONDS}, json=bulk_body, headers=admin),
            *(writes.write_once() for _ in range(PARALLEL_WRITES)),
        )
    audit = await settle_and_audit(session_factory, check_alive=pipeline.check_alive)
    logs = pipeline.logs()

    assert bulk.status_code == 200, bulk.text
    assert sorted(report["student_id"] for report in bulk.json()["reports"]) == sorted(map(str, report_students))
    assert bulk.json()["pending"] == []
    assert [outcome.status_code for outcome in writes.outcomes] == [201] * PARALLEL_WRITES
    assert [name for name, text in logs.items() if CONNECTION_MISUSE in text] == []
    assert await writes_without_one_request(session_factory, writes.outcomes) == {}
    assert audit.refresh_requests == PARALLEL_WRITES
    assert audit.report_requests == BULK_REPORTS
    assert_nothing_lost_or_doubled(audit)
    await pipeline.stop_all_cleanly()
    assert await unapplied_deliveries(settings, session_factory) == {}
