"""The `dlq` commands: list, replay and purge the consumers' dead-letter queues.

Each command takes ``--queue``: a consumer such as summary, its queue or its dead-letter
queue, and every consumer when omitted. Output is in French unless ``--lang en`` is given
or LANG starts with "en". They exit with 1 when the broker is unreachable, a replay failed or a
purge was not confirmed, and with 2 on invalid arguments such as an unknown queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import click
import typer

from dashboard_jobs.commands.language import output_language
from dashboard_jobs.consumers.topology import Topology, build_topology
from dashboard_jobs.producers.dead_letters import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    DeadLetter,
    ReplayResult,
    UnknownQueueError,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
    select_queues,
)
from dashboard_jobs.runtime import BrokerUnavailableError
from dashboard_jobs.settings import Settings

T = TypeVar("T")

dlq_app = typer.Typer(
    help="Inspect, replay and purge the consumers' dead-letter queues.",
    no_args_is_help=True,
)

QueueOption = Annotated[
    str | None,
    typer.Option("--queue", help="Consumer (summary, parent_report), its queue or its dead-letter queue. Default: every consumer."),
]
LangOption = Annotated[
    str | None, typer.Option("--lang", help="Output language, fr or en. Default: from LANG, else fr.")
]

REASON_LABELS = {
    "fr": {
        "permanent": "erreur permanente",
        "retries_exhausted": "tentatives épuisées",
        "delivery_limit": "limite de livraisons atteinte",
        "rejected": "rejeté",
        "expired": "expiré",
    },
    "en": {
        "permanent": "permanent error",
        "retries_exhausted": "retries exhausted",
        "delivery_limit": "delivery limit reached",
        "rejected": "rejected",
        "expired": "expired",
    },
}
TEXTS = {
    "fr": {
        "line": "{message_id}  type {type}  raison {reason}  tentatives {attempts}  âge {age}  erreur {error}",
        "listed": "Total : {count} message(s) en dead-letter affiché(s).",
        "replayed": "{message_id}  rejoué vers {exchange} / {routing_key}",
        "would_replay": "{message_id}  serait rejoué vers {exchange} / {routing_key}",
        "replay_failed": "{message_id}  échec : {error}",
        "replay_total": "Total : {count} message(s) rejoué(s), {failed} échec(s).",
        "dry_run_total": "Simulation : {count} message(s) seraient rejoués, rien n'a été modifié.",
        "confirm_purge": "Supprimer définitivement les messages de {queues} ?",
        "purge_cancelled": "Purge annulée : aucun message supprimé.",
        "purged": "{queue} : {count} message(s) supprimé(s)",
        "purge_total": "Total : {count} message(s) supprimé(s).",
        "default_exchange": "(échange par défaut)",
        "unknown": "?",
    },
    "en": {
        "line": "{message_id}  type {type}  reason {reason}  attempts {attempts}  age {age}  error {error}",
        "listed": "Total: {count} dead letter(s) listed.",
        "replayed": "{message_id}  replayed to {exchange} / {routing_key}",
        "would_replay": "{message_id}  would be replayed to {exchange} / {routing_key}",
        "replay_failed": "{message_id}  failed: {error}",
        "replay_total": "Total: {count} message(s) replayed, {failed} failed.",
        "dry_run_total": "Dry run: {count} message(s) would be replayed; nothing was changed.",
        "confirm_purge": "Permanently delete the messages of {queues}?",
        "purge_cancelled": "Purge cancelled: no message deleted.",
        "purged": "{queue}: {count} message(s) deleted",
        "purge_total": "Total: {count} message(s) deleted.",
        "default_exchange": "(default exchange)",
        "unknown": "?",
    },
}
QUEUE_ERRORS = {
    "fr": "Aucune file de consommateur ne s'appelle {value!r}. Files connues : {known}.",
    "en": "No consumer queue is named {value!r}. Known queues: {known}.",
}


@dlq_app.command("list")
def list_command(
    queue: QueueOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_LIST_LIMIT, help="Maximum number of dead letters shown.")] = DEFAULT_LIST_LIMIT,
    lang: LangOption = None,
) -> None:
    """List dead letters without removing or reordering them."""
    language = output_language(lang)
    settings = _settings_for(queue, language)
    letters = _run(list_dead_letters(settings, queue, limit))

    now = datetime.now(UTC)
    current_queue = None
    for letter in letters:
        if letter.dead_letter_queue != current_queue:
            current_queue = letter.dead_letter_queue
            typer.echo(f"{current_queue}:")
        typer.echo("  " + format_dead_letter(letter, now, language))
    typer.echo(TEXTS[language]["listed"].format(count=len(letters)))


@dlq_app.command("replay")
def replay_command(
    queue: QueueOption = None,
    message_id: Annotated[
        list[str] | None,
        typer.Option("--message-id", help="Replay only this message id; repeat for several. Default: every dead letter."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Maximum number of messages replayed.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed and change nothing.")] = False,
    lang: LangOption = None,
) -> None:
    """Publish dead letters again to their original exchange, with their message id, then remove them."""
    language = output_language(lang)
    settings = _settings_for(queue, language)
    result = _run(replay_dead_letters(settings, queue, message_id or (), limit, dry_run))

    for line in format_replay(result, language):
        typer.echo(line)
    if result.failed:
        raise typer.Exit(1)


@dlq_app.command("purge")
def purge_command(
    queue: QueueOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Purge without asking for confirmation.")] = False,
    lang: LangOption = None,
) -> None:
    """Delete the messages of the dead-letter queues, after confirmation."""
    language = output_language(lang)
    settings = _settings_for(queue, language)
    texts = TEXTS[language]
    if not yes:
        names = ", ".join(q.dead_letter_queue for q in select_queues(_topology(settings), queue))
        try:
            confirmed = typer.confirm(texts["confirm_purge"].format(queues=names), default=False)
        except click.exceptions.Abort:
            # Standard input closed before a reply, as in a script that forgot --yes.
            confirmed = False
        if not confirmed:
            typer.echo(texts["purge_cancelled"], err=True)
            raise typer.Exit(1)

    purged = _run(purge_dead_letters(settings, queue))
    for name, count in purged.items():
        typer.echo(texts["purged"].format(queue=name, count=count))
    typer.echo(texts["purge_total"].format(count=sum(purged.values())))


def format_dead_letter(letter: DeadLetter, now: datetime, language: str) -> str:
    unknown = TEXTS[language]["unknown"]
    reason = REASON_LABELS[language].get(letter.reason or "", letter.reason or unknown)
    return TEXTS[language]["line"].format(
        message_id=letter.message_id or unknown,
        type=letter.type or unknown,
        reason=reason,
        attempts=unknown if letter.attempts is None else letter.attempts,
        age=format_age(letter.age(now), language),
        error=letter.error or unknown,
    )


def format_replay(result: ReplayResult, language: str) -> list[str]:
    texts = TEXTS[language]
    template = texts["would_replay"] if result.dry_run else texts["replayed"]
    lines = [
        template.format(
            message_id=letter.message_id or texts["unknown"],
            exchange=letter.original_exchange or texts["default_exchange"],
            routing_key=letter.original_routing_key,
        )
        for letter in result.replayed
    ]
    lines += [
        texts["replay_failed"].format(message_id=letter.message_id or texts["unknown"], error=error)
        for letter, error in result.failed
    ]
    if result.dry_run:
        lines.append(texts["dry_run_total"].format(count=len(result.replayed)))
    else:
        lines.append(texts["replay_total"].format(count=len(result.replayed), failed=len(result.failed)))
    return lines


def format_age(age: timedelta | None, language: str) -> str:
    if age is None:
        return TEXTS[language]["unknown"]
    seconds = max(0, int(age.total_seconds()))
    day = "j" if language == "fr" else "d"
    for unit_seconds, unit in ((86_400, f" {day}"), (3_600, " h"), (60, " min")):
        if seconds >= unit_seconds:
            return f"{seconds // unit_seconds}{unit}"
    return f"{seconds} s"


def _settings_for(queue: str | None, language: str) -> Settings:
    """Load the settings and check ``--queue`` before anything talks to the broker."""
    from dashboard_jobs.cli import load_settings

    settings = load_settings()
    try:
        select_queues(_topology(settings), queue)
    except UnknownQueueError as error:
        known = ", ".join(f"{q.consumer} ({q.dead_letter_queue})" for q in error.known)
        raise typer.BadParameter(QUEUE_ERRORS[language].format(value=error.value, known=known), param_hint="--queue") from None
    return settings


def _topology(settings: Settings) -> Topology:
    return build_topology(settings)


def _run(operation: Coroutine[Any, Any, T]) -> T:
    """Run ``operation``; print why the broker is unreachable and exit with 1 when it is."""
    try:
        return asyncio.run(operation)
    except BrokerUnavailableError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
