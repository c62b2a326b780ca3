"""Readiness of the worker: broker connection and a consumer on every queue, its HTTP probes and its watchdog."""

from __future__ import annotations

import asyncio
import json
import logging
import signal

import aio_pika
import httpx
import pytest

from dashboard_jobs.consumers.app import build_worker
from dashboard_jobs.consumers.health import Readiness, check_readiness, watch_readiness
from dashboard_jobs.consumers.topology import REPORT_CONSUMER, SUMMARY_CONSUMER
from dashboard_jobs.demo.processes import free_port
from dashboard_jobs.health_endpoint import HealthServer
from tests.cli_process import CliProcess
from tests.helpers import wait_for
from tests.tcp_proxy import TcpProxy
from tests.test_relay_failures import _port, _via


async def delete_queue(settings, name: str) -> None:
    """Delete a queue as an operator would from the management UI; RabbitMQ cancels its consumers."""
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(name)
    finally:
        await connection.close()


@pytest.fixture
async def worker(settings, session_factory, topology):
    worker = build_worker(settings, session_factory)
    await worker.broker.start()
    yield worker
    await worker.broker.stop()


async def test_started_worker_is_ready(settings, worker):
    readiness = await check_readiness(worker.broker)

    assert readiness.ready
    assert readiness.connected
    assert readiness.consumers[settings.queue_name(SUMMARY_CONSUMER)] is True
    assert readiness.consumers[settings.queue_name(REPORT_CONSUMER)] is True
    assert readiness.problems == []


async def test_worker_not_ready_before_start(settings, session_factory, topology):
    worker = build_worker(settings, session_factory)

    readiness = await check_readiness(worker.broker, timeout=0.2)

    assert not readiness.ready
    assert "broker connection is not open" in readiness.problems


async def test_cancelled_consumer_means_not_ready(settings, worker):
    summary_queue = settings.queue_name(SUMMARY_CONSUMER)

    await delete_queue(settings, summary_queue)

    async def summary_consumer_gone() -> bool:
        return not (await check_readiness(worker.broker)).consumers[summary_queue]

    await wait_for(summary_consumer_gone, timeout=15, what="the broker's consumer cancellation")
    readiness = await check_readiness(worker.broker)
    assert readiness.connected
    assert not readiness.ready
    assert readiness.consumers[settings.queue_name(REPORT_CONSUMER)] is True
    assert readiness.problems == [f"no consumer on queue {summary_queue}"]


async def test_ready_again_after_broker_outage(settings, session_factory, topology):
    async with TcpProxy("127.0.0.1", _port(settings.rabbitmq_url)) as proxy:
        proxied = settings.model_copy(update={"rabbitmq_url": _via(settings.rabbitmq_url, proxy.port)})
        worker = build_worker(proxied, session_factory)
        await worker.broker.start()
        try:
            assert (await check_readiness(worker.broker)).ready

            await proxy.cut()
            await wait_for(lambda: _not_ready(worker), timeout=15, what="readiness to drop")
            await proxy.restore()
            await wait_for(lambda: _ready(worker), timeout=60, what="consumers restored after reconnection")
        finally:
            await worker.broker.stop()


async def test_watchdog_returns_after_unready_period(caplog):
    results = iter([Readiness(True, {"q": True})] + [Readiness(True, {"q": False})] * 1000)

    async def check() -> Readiness:
        return next(results)

    with caplog.at_level(logging.WARNING, logger="dashboard_jobs.consumers.health"):
        final = await asyncio.wait_for(
            watch_readiness(check, unready_exit_seconds=0.2, interval_seconds=0.01), timeout=10
        )

    assert not final.ready
    assert [r.levelname for r in caplog.records] == ["WARNING", "CRITICAL"]
    assert caplog.records[-1].problems == ["no consumer on queue q"]


async def test_health_server_routes():
    states = [Readiness(True, {"q": True}), Readiness(False, {"q": False})]

    async def check() -> Readiness:
        return states.pop(0)

    server = HealthServer(check, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            live = await client.get("/health/live")
            ready = await client.get("/health/ready")
            unready = await client.get("/health/ready")
            unknown = await client.get("/metrics")
            post = await client.post("/health/ready")
    finally:
        await server.close()

    assert (live.status_code, live.json()) == (200, {"status": "live"})
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert unready.status_code == 503
    assert unready.json()["problems"] == ["broker connection is not open", "no consumer on queue q"]
    assert unknown.status_code == 404
    assert post.status_code == 405


async def test_watchdog_exits_worker_process(settings, topology):
    port = free_port()
    worker = CliProcess(settings, "worker", WORKER_HEALTH_PORT=str(port), WORKER_UNREADY_EXIT_SECONDS="2")
    try:
        worker.wait_for_output("health endpoint listening")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_for(lambda: _endpoint_ready(client), timeout=30, what="/health/ready to answer 200")

            await delete_queue(settings, settings.queue_name(SUMMARY_CONSUMER))
            await wait_for(lambda: _endpoint_unready(client, worker), timeout=30, what="/health/ready to answer 503")

        exit_code = await asyncio.to_thread(worker.wait, 60)
    finally:
        output = worker.stop()

    assert exit_code == 1, output
    assert "CRITICAL" in output
    assert "worker not ready for too long" in output
    assert f"no consumer on queue {settings.queue_name(SUMMARY_CONSUMER)}" in output


async def test_worker_process_stops_on_sigterm(settings, topology):
    port = free_port()
    worker = CliProcess(settings, "worker", WORKER_HEALTH_PORT=str(port), SHUTDOWN_GRACE_SECONDS="5")
    try:
        worker.wait_for_output("health endpoint listening")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_for(lambda: _endpoint_ready(client), timeout=30, what="/health/ready to answer 200")
        worker.signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(worker.wait, 30)
    finally:
        output = worker.stop()

    assert exit_code == 0, output
    assert "worker shutdown started" in output
    assert "worker shutdown finished" in output


async def _ready(worker) -> bool:
    return (await check_readiness(worker.broker)).ready


async def _not_ready(worker) -> bool:
    return not (await check_readiness(worker.broker)).ready


async def _endpoint_ready(client: httpx.AsyncClient) -> bool:
    try:
        response = await client.get("/health/ready")
    except httpx.TransportError:
        return False
    return response.status_code == 200 and json.loads(response.text)["status"] == "ready"


async def _endpoint_unready(client: httpx.AsyncClient, worker: CliProcess) -> bool:
    if worker.process.poll() is not None:
        return True
    try:
        response = await client.get("/health/ready")
    except httpx.TransportError:
        return False
    return response.status_code == 503
