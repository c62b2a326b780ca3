"""Start and stop the pipeline's processes (api, relay, worker) for the demo."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ProcessGroup:
    """Child processes of ``dashboard-jobs`` sharing one environment, each logging to a file."""

    environment: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *arguments: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # One run's logs per file: a rerun replaces them.
        log_file = (self.log_dir / f"{name}.log").open("wb")
        command = [sys.executable, "-m", "dashboard_jobs.cli", *arguments]
        process = subprocess.Popen(
            command, env={**os.environ, **self.environment}, stdout=log_file, stderr=subprocess.STDOUT
        )
        log_file.close()
        self.processes[name] = process
        log.info("process started", extra={"process_name": name, "pid": process.pid})
        return process

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"the {name} process exited with code {process.returncode}; "
                    f"see {self.log_dir / (name + '.log')}"
                )

    def stop_all(self) -> dict[str, int]:
        """Send SIGTERM to every process, wait for them, kill the ones still running; return exit codes."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        codes: dict[str, int] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("process did not stop in time, killing it", extra={"process_name": name, "pid": process.pid})
                process.kill()
                codes[name] = process.wait()
            # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean stop.
            clean = codes[name] in (0, -signal.SIGTERM)
            log.log(logging.INFO if clean else logging.ERROR, "process stopped",
                    extra={"process_name": name, "exit_code": codes[name]})
        return codes
