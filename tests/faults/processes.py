"""Real `dashboard-jobs` processes for the fault tests: start, kill -9, SIGTERM, restart.

Every wait is asynchronous, because the test's event loop also runs the TCP proxies that
the processes talk through: a blocking wait would take the broker away from them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from pathlib import Path

import httpx

from dashboard_jobs.consumers.topology import REPORT_CONSUMER, SUMMARY_CONSUMER
from dashboard_jobs.demo.processes import ProcessGroup, free_port
from dashboard_jobs.settings import Settings
from tests.faults.broker import queue_counts
from tests.helpers import wait_for

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
LOG_TAIL_CHARACTERS = 3_000
# uvicorn (0.29 and later) finishes its requests on SIGTERM, then raises the signal again,
# so a cleanly stopped API ends as killed by SIGTERM. Every other process exits with 0.
CLEAN_EXIT_CODES = {"api": (0, -signal.SIGTERM)}


def pipeline_environment(settings: Settings) -> dict[str, str]:
    """Return the environment that points a process at the run's database, broker and names."""
    return {
        "DATABASE_URL": settings.database_url or "",
        "RABBITMQ_URL": settings.rabbitmq_url,
        "BROKER_PREFIX": settings.broker_prefix,
        "APP_ENV": "development",
        "LOG_LEVEL": "INFO",
        "RELAY_INTERVAL_SECONDS": str(settings.relay_interval_seconds),
        "SUMMARY_COALESCE_SECONDS": str(settings.summary_coalesce_seconds),
    }


class Pipeline:
    """The api, relay and worker processes of one test, each logging to ``log_dir/NAME.log``.

    A restarted process appends to the same log file. ``close()`` stops every process
    this object ever started, killing the ones that ignore SIGTERM.
    """

    def __init__(self, settings: Settings, log_dir: Path, **environment: str) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self._group = ProcessGroup(environment={**pipeline_environment(settings), **environment}, log_dir=log_dir)
        self._arguments: dict[str, tuple[str, ...]] = {}
        self._started: list[subprocess.Popen[bytes]] = []
        self.api_url: str | None = None

    def start(self, name: str, *arguments: str) -> subprocess.Popen[bytes]:
        """Start ``dashboard-jobs ARGUMENTS`` under ``name``, with ``name`` as the default arguments."""
        arguments = arguments or (name,)
        process = self._group.start(name, *arguments)
        self._arguments[name] = arguments
        self._started.append(process)
        return process

    def start_api(self) -> str:
        """Start the API on a free port and return its base URL."""
        port = free_port()
        self.start("api", "api", "--host", "127.0.0.1", "--port", str(port))
        self.api_url = f"http://127.0.0.1:{port}"
        return self.api_url

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``name`` again with its previous arguments, once the previous process has exited."""
        previous = self._group.processes[name]
        if previous.poll() is None:
            raise RuntimeError(f"the {name} process (pid {previous.pid}) is still running. Stop it before restarting it.")
        return self.start(name, *self._arguments[name])

    def process(self, name: str) -> subprocess.Popen[bytes]:
        return self._group.processes[name]

    async def kill(self, name: str) -> int:
        """Send SIGKILL to ``name``, as a crash or the OOM killer would, and return its exit code."""
        process = self.process(name)
        process.send_signal(signal.SIGKILL)
        code = await self.wait_exit(name, STOP_TIMEOUT_SECONDS)
        if code is None:
            raise AssertionError(f"the {name} process (pid {process.pid}) survived SIGKILL")
        log.info("process killed", extra={"process_name": name, "pid": process.pid})
        return code

    def terminate(self, name: str) -> None:
        """Send SIGTERM to ``name`` without waiting for it to exit (see ``wait_exit``)."""
        self.process(name).send_signal(signal.SIGTERM)

    async def wait_exit(self, name: str, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for ``name`` to exit and return its exit code, or None if it still runs."""
        process = self.process(name)
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)
        return process.returncode

    def check_alive(self, *names: str) -> None:
        """Raise AssertionError, with the end of its log, when one of ``names`` (default all) has exited."""
        for name in names or tuple(self._group.processes):
            process = self._group.processes[name]
            if process.poll() is not None:
                raise AssertionError(
                    f"the {name} process exited with code {process.returncode}. End of its log:\n"
                    f"{self.log(name)[-LOG_TAIL_CHARACTERS:]}"
                )

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> dict[str, str]:
        """Return the log of every process started so far, by name."""
        return {name: self.log(name) for name in self._arguments}

    async def wait_api_ready(self) -> None:
        """Wait until the API returns 200 on /health/ready."""
        if self.api_url is None:
            raise RuntimeError("the API was not started. Call start_api() first.")

        async def ready() -> bool:
            self.check_alive("api")
            try:
                async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
                    return (await client.get(f"{self.api_url}/health/ready")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, START_TIMEOUT_SECONDS, "the API to answer /health/ready")

    async def wait_worker_consuming(self) -> None:
        """Wait until the summary and report queues each have a consumer on the broker."""
        names = [self.settings.queue_name(SUMMARY_CONSUMER), self.settings.queue_name(REPORT_CONSUMER)]

        async def consuming() -> bool:
            self.check_alive("worker")
            counts = await queue_counts(self.settings.rabbitmq_url, names)
            return all(consumers > 0 for _, consumers in counts.values())

        await wait_for(consuming, START_TIMEOUT_SECONDS, "the worker to consume the summary and report queues")

    async def stop_all_cleanly(self) -> None:
        """SIGTERM every running process and raise AssertionError unless each exits cleanly in time."""
        running = [name for name, process in self._group.processes.items() if process.poll() is None]
        for name in running:
            self.terminate(name)
        for name in running:
            code = await self.wait_exit(name, STOP_TIMEOUT_SECONDS)
            if code is None:
                raise AssertionError(
                    f"the {name} process did not stop within {STOP_TIMEOUT_SECONDS:.0f} s of SIGTERM. "
                    f"End of its log:\n{self.log(name)[-LOG_TAIL_CHARACTERS:]}"
                )
            if code not in CLEAN_EXIT_CODES.get(name, (0,)):
                raise AssertionError(
                    f"the {name} process exited with code {code} after SIGTERM. "
                    f"End of its log:\n{self.log(name)[-LOG_TAIL_CHARACTERS:]}"
                )

    def close(self) -> None:
        """Stop every process this pipeline started: SIGTERM, then SIGKILL after a grace period."""
        alive = [process for process in self._started if process.poll() is None]
        for process in alive:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in alive:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("process ignored SIGTERM, killing it", extra={"pid": process.pid})
                process.kill()
                process.wait()
