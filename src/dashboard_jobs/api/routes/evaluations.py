"""Evaluation writes: record a student's graded evaluations."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter

from dashboard_jobs.api.auth import CurrentPrincipal
from dashboard_jobs.api.dependencies import CorrelationId, SessionFactory
from dashboard_jobs.api.schemas import PROBLEM_RESPONSES, EvaluationCreate, EvaluationPublic
from dashboard_jobs.domain import services

log = logging.getLogger(__name__)

router = APIRouter(tags=["evaluations"], responses=PROBLEM_RESPONSES)


@router.post("/students/{student_id}/evaluations", status_code=201)
async def record_evaluation(
    student_id: uuid.UUID,
    body: EvaluationCreate,
    principal: CurrentPrincipal,
    session_factory: SessionFactory,
    correlation_id: CorrelationId = None,
) -> EvaluationPublic:
    """Record an evaluation and request a refresh of the student's summary."""
    async with session_factory() as session, session.begin():
        written = await services.record_evaluation(
            session,
            principal,
            student_id,
            subject=body.subject,
            score=body.score,
            max_score=body.max_score,
            evaluated_at=body.evaluated_at,
            correlation_id=correlation_id,
        )

    log.info(
        "evaluation recorded",
        extra={
            "student_id": str(student_id),
            "evaluation_id": str(written.row.id),
            "outbox_id": str(written.outbox_id),
            "correlation_id": str(correlation_id) if correlation_id else None,
        },
    )
    return EvaluationPublic.model_validate(written.row)
