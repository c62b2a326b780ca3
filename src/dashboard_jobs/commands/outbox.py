"""The `outbox status` and `outbox retry` commands, for operators watching the relay.

Both print in French unless ``--lang en`` is given or LANG starts with "en". `retry`
exits with 1 when a requested id does not exist and 2 on invalid arguments.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dashboard_jobs.commands.language import output_language
from dashboard_jobs.outbox.operations import OutboxStatus, RetryResult
from dashboard_jobs.settings import Settings

outbox_app = typer.Typer(
    help="Inspect the outbox and send parked messages back to the relay.",
    no_args_is_help=True,
)

LangOption = Annotated[
    str | None, typer.Option("--lang", help="Output language, fr or en. Default: from LANG, else fr.")
]

STATUS_LABELS = {
    "fr": {
        "pending": "Messages en attente de publication",
        "due": "à publier maintenant",
        "delayed": "en attente d'un nouvel essai",
        "parked": "Messages mis de côté après {max} échecs",
        "published": "Messages publiés conservés ({retention})",
        "oldest": "Plus ancien message en attente",
        "none": "aucun",
        "errors": "Dernières erreurs, par type d'événement",
        "no_errors": "Aucune erreur de publication.",
        "rows": "message(s)",
        "parked_rows": "mis de côté",
        "hint": "Renvoyer les messages mis de côté : dashboard-jobs outbox retry --all-parked",
    },
    "en": {
        "pending": "Messages waiting to be published",
        "due": "due now",
        "delayed": "waiting for a retry",
        "parked": "Messages parked after {max} failures",
        "published": "Published messages kept ({retention})",
        "oldest": "Oldest waiting message",
        "none": "none",
        "errors": "Latest errors, by event type",
        "no_errors": "No publish errors.",
        "rows": "message(s)",
        "parked_rows": "parked",
        "hint": "Send parked messages back: dashboard-jobs outbox retry --all-parked",
    },
}
RETRY_LABELS = {
    "fr": {
        "retried": "{count} message(s) remis en file, à publier maintenant",
        "not_parked": "message {id} non renvoyé : il n'est pas mis de côté (état : {state})",
        "not_found": "message {id} introuvable dans l'outbox",
        "states": {"pending": "en attente", "published": "publié"},
    },
    "en": {
        "retried": "{count} message(s) sent back to the relay, due now",
        "not_parked": "message {id} not retried: it is not parked (state: {state})",
        "not_found": "message {id} not found in the outbox",
        "states": {"pending": "pending", "published": "published"},
    },
}
UNITS = {"fr": ("j", "h", "min", "s"), "en": ("d", "h", "min", "s")}


@outbox_app.command("status")
def status(lang: LangOption = None) -> None:
    """Print the outbox counts, the oldest waiting message and the latest publish errors."""
    language = output_language(lang)
    settings = _load_settings()
    outbox_status = asyncio.run(_read_status(settings))
    typer.echo(format_status(outbox_status, language, settings))


@outbox_app.command("retry")
def retry(
    message_id: Annotated[
        list[str] | None,
        typer.Option("--id", help="Outbox message id (UUID) of a parked message; repeat for several."),
    ] = None,
    all_parked: Annotated[bool, typer.Option("--all-parked", help="Retry every parked message.")] = False,
    lang: LangOption = None,
) -> None:
    """Send parked messages back to the relay now; their attempt counts are kept."""
    language = output_language(lang)
    if bool(message_id) == all_parked:
        raise typer.BadParameter("give --id (one or more) or --all-parked, not both and not neither", param_hint="--id")
    ids = None if all_parked else _parse_ids(message_id or [])
    settings = _load_settings()

    result = asyncio.run(_retry(settings, ids))
    for line in format_retry(result, language):
        typer.echo(line)
    if result.not_found:
        raise typer.Exit(1)


async def _read_status(settings: Settings) -> OutboxStatus:
    from dashboard_jobs.outbox.operations import read_status

    async with _database(settings) as sessions, sessions() as session:
        return await read_status(session)


async def _retry(settings: Settings, ids: list[uuid.UUID] | None) -> RetryResult:
    from dashboard_jobs.outbox.operations import retry_parked

    async with _database(settings) as sessions, sessions() as session, session.begin():
        return await retry_parked(session, ids)


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    from dashboard_jobs.db import create_engine, create_session_factory
    from dashboard_jobs.processes import require_database_url

    engine = create_engine(require_database_url(settings), pool_size=2)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


def format_status(outbox_status: OutboxStatus, language: str, settings: Settings) -> str:
    labels = STATUS_LABELS[language]
    oldest = (
        format_duration(outbox_status.oldest_pending_age, language)
        if outbox_status.oldest_pending_age is not None
        else labels["none"]
    )
    lines = [
        _field(labels["pending"], outbox_status.pending, language),
        _field(f"  {labels['due']}", outbox_status.due, language),
        _field(f"  {labels['delayed']}", outbox_status.delayed, language),
        _field(labels["parked"].format(max=settings.outbox_max_attempts), outbox_status.parked, language),
        _field(labels["published"].format(retention=format_duration(settings.outbox_retention, language)),
               outbox_status.published, language),
        _field(labels["oldest"], oldest, language),
    ]
    if not outbox_status.errors:
        lines.append(labels["no_errors"])
        return "\n".join(lines)

    lines.append(labels["errors"] + (" :" if language == "fr" else ":"))
    for group in outbox_status.errors:
        parked = f", {group.parked} {labels['parked_rows']}" if group.parked else ""
        lines.append(f"  {group.event_type}  {group.error_class}  {group.rows} {labels['rows']}{parked}")
        lines.append(f"    {_shorten(group.latest_error)}")
    if outbox_status.parked:
        lines.append(labels["hint"])
    return "\n".join(lines)


def format_retry(result: RetryResult, language: str) -> list[str]:
    labels = RETRY_LABELS[language]
    lines = [labels["retried"].format(count=len(result.retried))]
    for row_id, state in result.not_parked.items():
        lines.append(labels["not_parked"].format(id=row_id, state=labels["states"][state]))
    for row_id in result.not_found:
        lines.append(labels["not_found"].format(id=row_id))
    return lines


def format_duration(duration: timedelta, language: str) -> str:
    """Format a duration with its two largest units, such as "3 min 12 s" or "2 j 5 h"."""
    seconds = max(0, int(duration.total_seconds()))
    values = (seconds // 86_400, seconds % 86_400 // 3600, seconds % 3600 // 60, seconds % 60)
    parts = [f"{value} {unit}" for value, unit in zip(values, UNITS[language], strict=True) if value]
    return " ".join(parts[:2]) or f"0 {UNITS[language][-1]}"


def _field(label: str, value: object, language: str) -> str:
    # French typography puts a space before the colon.
    return f"{label} : {value}" if language == "fr" else f"{label}: {value}"


def _shorten(error: str, limit: int = 160) -> str:
    error = " ".join(error.split())
    return error if len(error) <= limit else error[: limit - 1] + "…"


def _parse_ids(values: list[str]) -> list[uuid.UUID]:
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            raise typer.BadParameter(
                f"{value!r} is not a UUID; pass an outbox message id as printed in the relay's logs (outbox_id)",
                param_hint="--id",
            ) from None
    return ids


# The cli module registers this sub-application and so imports this module; importing it
# back inside the functions avoids the import cycle.


def _load_settings() -> Settings:
    from dashboard_jobs.cli import load_settings

    return load_settings()
