"""Liveness and readiness probes; they need no authentication."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from dashboard_jobs.api.dependencies import SessionFactory
from dashboard_jobs.api.problems import problem_response, request_language, translate
from dashboard_jobs.api.schemas import HealthPublic, ProblemPublic

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 3.0
RETRY_AFTER_SECONDS = 5

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> HealthPublic:
    """Return 200 while the process serves requests."""
    return HealthPublic(status="live")


@router.get(
    "/ready",
    response_model=HealthPublic,
    responses={503: {"model": ProblemPublic, "description": "The database does not answer."}},
)
async def ready(request: Request, session_factory: SessionFactory) -> HealthPublic | JSONResponse:
    """Run SELECT 1 and return 200, or a 503 problem when the database fails or times out."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS), session_factory() as session:
            await session.execute(text("SELECT 1"))
    # Any failure, whether refused connection, timeout or SQL error, means the API cannot serve writes.
    except Exception as error:
        log.warning("readiness check failed", extra={"error": f"{type(error).__name__}: {error}"})
        return problem_response(
            request,
            503,
            kind="unavailable",
            detail=translate("unavailable.database", request_language(request)),
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return HealthPublic(status="ready")
