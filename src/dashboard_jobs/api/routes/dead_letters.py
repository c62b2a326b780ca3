"""Operations endpoints on the consumers' dead-letter queues, for admins only.

Unlike the domain routes, which write rows and let the relay publish, these talk to
RabbitMQ directly, because a dead letter exists only in the broker. They call the same
functions as ``dashboard-jobs dlq``: listing leaves every message in place, replay moves
messages back to their original exchange with their message id, and purge deletes them.
An unreachable broker gives a 503 problem.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dashboard_jobs.api.auth import CurrentPrincipal
from dashboard_jobs.api.problems import problem_response, request_language, translate
from dashboard_jobs.api.schemas import PROBLEM_RESPONSES, ProblemPublic, RequestModel
from dashboard_jobs.domain.access import Principal
from dashboard_jobs.domain.errors import Forbidden, InvalidInput
from dashboard_jobs.domain.models import Role
from dashboard_jobs.producers.dead_letters import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    DeadLetter,
    UnknownQueueError,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)
from dashboard_jobs.runtime import BrokerUnavailableError
from dashboard_jobs.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# At most this many message ids in one replay request.
MAX_REPLAY_MESSAGE_IDS = 1_000

RETRY_AFTER_SECONDS = 5

router = APIRouter(
    prefix="/admin/dead-letters",
    tags=["operations"],
    responses={
        **PROBLEM_RESPONSES,
        503: {"model": ProblemPublic, "description": "RabbitMQ does not answer."},
    },
)


class DeadLetterPublic(BaseModel):
    dead_letter_queue: str
    message_id: str | None
    type: str | None
    reason: str | None = Field(description="permanent, retries_exhausted, or RabbitMQ's reason such as delivery_limit.")
    attempts: int | None
    dead_lettered_at: datetime | None
    age_seconds: int | None
    error: str | None = Field(description="Exception type and the first line of its message.")
    original_exchange: str | None
    original_routing_key: str | None


class DeadLetterListPublic(BaseModel):
    dead_letters: list[DeadLetterPublic]


class DeadLetterReplay(RequestModel):
    queue: str | None = Field(default=None, description="Consumer, queue or dead-letter queue. Default: every consumer.")
    message_ids: list[str] | None = Field(
        default=None, max_length=MAX_REPLAY_MESSAGE_IDS, description="Replay only these message ids. Default: all."
    )
    limit: int | None = Field(default=None, ge=1, description="Maximum number of messages replayed.")
    dry_run: bool = Field(default=False, description="Return what would be replayed and change nothing.")


class ReplayFailurePublic(BaseModel):
    message_id: str | None
    error: str


class DeadLetterReplayPublic(BaseModel):
    dry_run: bool
    replayed: list[DeadLetterPublic]
    failed: list[ReplayFailurePublic]


class DeadLetterPurge(RequestModel):
    queue: str | None = Field(default=None, description="Consumer, queue or dead-letter queue. Default: every consumer.")
    confirm: bool = Field(description="Must be true: purging deletes the messages for good.")


class DeadLetterPurgePublic(BaseModel):
    purged: dict[str, int] = Field(description="Messages deleted, by dead-letter queue.")
    total: int


@router.get("", response_model=DeadLetterListPublic)
async def list_dead_letters_route(
    principal: CurrentPrincipal,
    request: Request,
    queue: str | None = Query(default=None, description="Consumer, queue or dead-letter queue. Default: every consumer."),
    limit: int = Query(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT, description="Maximum number of dead letters."),
) -> DeadLetterListPublic | JSONResponse:
    """List dead letters, oldest first in each queue, without removing or reordering them."""
    _ensure_admin(principal)
    try:
        letters = await _call(list_dead_letters(_settings(request), queue, limit), queue)
    except BrokerUnavailableError as error:
        return _broker_unavailable(request, error)

    now = datetime.now(UTC)
    return DeadLetterListPublic(dead_letters=[_public(letter, now) for letter in letters])


@router.post("/replay", response_model=DeadLetterReplayPublic)
async def replay_dead_letters_route(
    body: DeadLetterReplay, principal: CurrentPrincipal, request: Request
) -> DeadLetterReplayPublic | JSONResponse:
    """Publish dead letters again to their original exchange with their message id, then remove them."""
    _ensure_admin(principal)
    operation = replay_dead_letters(_settings(request), body.queue, body.message_ids or (), body.limit, body.dry_run)
    try:
        result = await _call(operation, body.queue)
    except BrokerUnavailableError as error:
        return _broker_unavailable(request, error)

    log.info(
        "dead letters replayed",
        extra={"account_id": str(principal.account_id), "replayed": len(result.replayed),
               "failed": len(result.failed), "dry_run": body.dry_run},
    )
    now = datetime.now(UTC)
    return DeadLetterReplayPublic(
        dry_run=result.dry_run,
        replayed=[_public(letter, now) for letter in result.replayed],
        failed=[ReplayFailurePublic(message_id=letter.message_id, error=error) for letter, error in result.failed],
    )


@router.post("/purge", response_model=DeadLetterPurgePublic)
async def purge_dead_letters_route(
    body: DeadLetterPurge, principal: CurrentPrincipal, request: Request
) -> DeadLetterPurgePublic | JSONResponse:
    """Delete the messages of the dead-letter queues; ``confirm`` must be true."""
    _ensure_admin(principal)
    if not body.confirm:
        raise InvalidInput("confirm", body.confirm, "dead_letters.purge_unconfirmed")
    try:
        purged = await _call(purge_dead_letters(_settings(request), body.queue), body.queue)
    except BrokerUnavailableError as error:
        return _broker_unavailable(request, error)

    log.warning("dead letters purged", extra={"account_id": str(principal.account_id), "purged": purged})
    return DeadLetterPurgePublic(purged=purged, total=sum(purged.values()))


def _ensure_admin(principal: Principal) -> None:
    if principal.role is not Role.ADMIN:
        raise Forbidden("admin_only")


def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _call(operation: Awaitable[T], queue: str | None) -> T:
    try:
        return await operation
    except UnknownQueueError as error:
        known = [f"{q.consumer} ({q.dead_letter_queue})" for q in error.known]
        raise InvalidInput("queue", queue, "dead_letters.queue_unknown", known=known) from None


def _broker_unavailable(request: Request, error: BrokerUnavailableError) -> JSONResponse:
    log.warning("dead-letter operation failed, broker unavailable", extra={"error": str(error)})
    return problem_response(
        request,
        503,
        kind="unavailable",
        detail=translate("unavailable.broker", request_language(request)),
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _public(letter: DeadLetter, now: datetime) -> DeadLetterPublic:
    age = letter.age(now)
    return DeadLetterPublic(
        dead_letter_queue=letter.dead_letter_queue,
        message_id=letter.message_id,
        type=letter.type,
        reason=letter.reason,
        attempts=letter.attempts,
        dead_lettered_at=letter.dead_lettered_at,
        age_seconds=None if age is None else max(0, int(age.total_seconds())),
        error=letter.error,
        original_exchange=letter.original_exchange,
        original_routing_key=letter.original_routing_key,
    )
