"""Tutoring session writes: log a student's sessions and change them."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter

from dashboard_jobs.api.auth import CurrentPrincipal
from dashboard_jobs.api.dependencies import CorrelationId, SessionFactory
from dashboard_jobs.api.problems import student_access_reworded
from dashboard_jobs.api.schemas import PROBLEM_RESPONSES, SessionCreate, SessionPublic, SessionUpdate
from dashboard_jobs.domain import services
from dashboard_jobs.domain.models import TutoringSession
from dashboard_jobs.domain.services import Written

log = logging.getLogger(__name__)

router = APIRouter(tags=["tutoring sessions"], responses=PROBLEM_RESPONSES)


@router.post("/students/{student_id}/sessions", status_code=201)
async def log_tutoring_session(
    student_id: uuid.UUID,
    body: SessionCreate,
    principal: CurrentPrincipal,
    session_factory: SessionFactory,
    correlation_id: CorrelationId = None,
) -> SessionPublic:
    """Log a tutoring session; a coach logs their own, an admin names the coach in coach_id."""
    async with session_factory() as session, session.begin():
        written = await services.log_tutoring_session(
            session,
            principal,
            student_id,
            starts_at=body.starts_at,
            duration_minutes=body.duration_minutes,
            status=body.status,
            coach_id=body.coach_id,
            correlation_id=correlation_id,
        )

    _log_write("tutoring session logged", written, correlation_id)
    return SessionPublic.model_validate(written.row)


@router.patch("/sessions/{session_id}")
async def update_tutoring_session(
    session_id: uuid.UUID,
    body: SessionUpdate,
    principal: CurrentPrincipal,
    session_factory: SessionFactory,
    correlation_id: CorrelationId = None,
) -> SessionPublic:
    """Change a tutoring session's start, duration or status."""
    with student_access_reworded("session"):
        async with session_factory() as session, session.begin():
            written = await services.update_tutoring_session(
                session, principal, session_id, **body.model_dump(exclude_unset=True), correlation_id=correlation_id
            )

    _log_write("tutoring session updated", written, correlation_id)
    return SessionPublic.model_validate(written.row)


def _log_write(message: str, written: Written[TutoringSession], correlation_id: uuid.UUID | None) -> None:
    log.info(
        message,
        extra={
            "student_id": str(written.row.student_id),
            "session_id": str(written.row.id),
            "outbox_id": str(written.outbox_id),
            "correlation_id": str(correlation_id) if correlation_id else None,
        },
    )
