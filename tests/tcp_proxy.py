"""A TCP proxy on 127.0.0.1 that a test can cut and restore, to simulate a server outage.

    async with TcpProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        ...
        await proxy.cut()      # open connections are reset, new ones are refused
        await proxy.restore()  # new connections reach the server again

The shared servers keep running: only the path through the proxy goes down, so a test
can take "the broker" or "the database" away from the processes it started without
touching anyone else's. ``TcpProxy.to_unix_socket(path)`` forwards to a server that
listens on a Unix socket only, such as an embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
CHUNK_BYTES = 64 * 1024


class TcpProxy:
    """Forwards connections from ``127.0.0.1:port`` to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        if target_host not in LOOPBACK_HOSTS:
            raise ValueError(f"TcpProxy only forwards to this machine; got target host {target_host!r}")
        self.target_host = target_host
        self.target_port = target_port
        self.target_socket: str | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    @classmethod
    def to_unix_socket(cls, path: str) -> TcpProxy:
        """Return a proxy from a TCP port on 127.0.0.1 to the Unix socket at ``path``."""
        proxy = cls("127.0.0.1", 0)
        proxy.target_socket = path
        return proxy

    async def __aenter__(self) -> TcpProxy:
        await self._listen()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cut()

    @property
    def is_cut(self) -> bool:
        return self._server is None

    @property
    def connections(self) -> int:
        """Number of client connections currently forwarded."""
        return len(self._transports) // 2

    async def cut(self) -> None:
        """Stop listening, so connecting is refused, and reset every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        log.info("proxy cut", extra={"port": self.port})

    async def restore(self) -> None:
        """Listen on the same port again; a no-op when the proxy is not cut."""
        if self._server is None:
            await self._listen()
            log.info("proxy restored", extra={"port": self.port})

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._forward, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            if self.target_socket is not None:
                server_reader, server_writer = await asyncio.open_unix_connection(self.target_socket)
            else:
                server_reader, server_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        if self.is_cut:
            client_writer.transport.abort()
            server_writer.transport.abort()
            return

        pair = {client_writer.transport, server_writer.transport}
        self._transports |= pair
        pumps = [
            asyncio.create_task(self._pump(client_reader, server_writer)),
            asyncio.create_task(self._pump(server_reader, client_writer)),
        ]
        self._pumps.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._pumps.difference_update(pumps)
            self._transports -= pair
            for transport in pair:
                transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # When one side closes, the whole connection closes: half-open TCP is not worth
        # modelling for these protocols.
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK_BYTES):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
