"""A minimal HTTP endpoint for the liveness and readiness probes of the relay and the worker.

Those processes serve no other HTTP, so a few lines of asyncio replace a web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 5.0
MAX_REQUEST_BYTES = 8 * 1024
PATHS = ("/health/live", "/health/ready")


class HealthReport(Protocol):
    @property
    def ready(self) -> bool: ...

    def as_json(self) -> dict[str, object]: ...


class HealthServer:
    """A minimal HTTP/1.1 server that serves GET /health/live and GET /health/ready as JSON."""

    def __init__(self, check: Callable[[], Awaitable[HealthReport]], host: str, port: int) -> None:
        self._check = check
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port, which differs from the requested one when that was 0."""
        if self._server is None:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("health endpoint listening", extra={"host": self._host, "port": self.port})

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body = await self._respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        payload = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _respond(self, head: bytes) -> tuple[str, dict[str, object]]:
        if len(head) > MAX_REQUEST_BYTES:
            return "431 Request Header Fields Too Large", {"status": "invalid request"}
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if path not in PATHS:
            return "404 Not Found", {"status": "not found", "paths": list(PATHS)}
        if method != "GET":
            return "405 Method Not Allowed", {"status": "method not allowed"}
        if path == "/health/live":
            return "200 OK", {"status": "live"}
        report = await self._check()
        return ("200 OK" if report.ready else "503 Service Unavailable"), report.as_json()
