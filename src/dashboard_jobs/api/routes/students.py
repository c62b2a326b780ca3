"""Reads of a student's dashboard summary."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response

from dashboard_jobs.api.auth import CurrentPrincipal
from dashboard_jobs.api.dependencies import SessionFactory
from dashboard_jobs.api.problems import request_language, translate
from dashboard_jobs.api.schemas import PROBLEM_RESPONSES, DashboardPublic, SummaryPublic
from dashboard_jobs.domain.access import ensure_can_access
from dashboard_jobs.domain.models import DashboardSummary

router = APIRouter(tags=["students"], responses=PROBLEM_RESPONSES)


@router.get("/students/{student_id}/dashboard")
async def read_dashboard(
    student_id: uuid.UUID,
    principal: CurrentPrincipal,
    session_factory: SessionFactory,
    request: Request,
    response: Response,
) -> DashboardPublic:
    """Return the student's dashboard summary, or status pending while none was computed yet."""
    async with session_factory() as session:
        await ensure_can_access(session, principal, student_id)
        summary = await session.get(DashboardSummary, student_id)

    if summary is None:
        language = request_language(request)
        response.headers["Content-Language"] = language
        response.headers["Vary"] = "Accept-Language"
        return DashboardPublic(
            student_id=student_id,
            status="pending",
            refreshed_at=None,
            summary=None,
            detail=translate("dashboard.pending", language),
        )
    return DashboardPublic(
        student_id=student_id,
        status="fresh",
        refreshed_at=summary.refreshed_at,
        summary=SummaryPublic.model_validate(summary),
    )
