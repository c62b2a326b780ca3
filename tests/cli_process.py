"""Run `dashboard-jobs` commands as real processes against the test run's servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dashboard_jobs.settings import Settings


def cli_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "RABBITMQ_URL": settings.rabbitmq_url,
        "BROKER_PREFIX": settings.broker_prefix,
        "APP_ENV": "development",
        "LOG_LEVEL": "INFO",
        **overrides,
    }


def run_cli(settings: Settings, *arguments: str, timeout: float = 120, **overrides: str) -> subprocess.CompletedProcess[str]:
    """Run one command to completion and return its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "dashboard_jobs.cli", *arguments],
        env=cli_environment(settings, **overrides), capture_output=True, text=True, timeout=timeout,
    )


class CliProcess:
    """A long-running command whose standard error goes to a file the test can read while it runs."""

    def __init__(self, settings: Settings, *arguments: str, **overrides: str) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix="dashboard-jobs-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dashboard_jobs.cli", *arguments],
            env=cli_environment(settings, **overrides),
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> str:
        """Kill the process if it still runs, delete its log and return what it printed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        output = self.output
        self._log.close()
        self.log_path.unlink(missing_ok=True)
        return output

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Poll the log until it contains ``text``; fail with the log when the process exits first."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.process.poll() is not None:
                raise AssertionError(f"process exited with {self.process.returncode} before {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {text!r}:\n{self.output}")
            time.sleep(0.05)
