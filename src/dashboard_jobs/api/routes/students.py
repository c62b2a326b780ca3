"""Reads of a student's dashboard summary."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response

from dashboard_jobs.api.auth import CurrentPrincipal
from dashboard_jobs.api.dependencies import SessionFactory
from dashboard_jobs.api.problems import request_language, translate
from dashboard_jobs.api.schemas import PROBLEM_RESPONSES, DashboardPublic, SummaryPublic
from dashboard_jobs.domain.access import ensure_can_access
from dashboard_jobs.domain.summary import has_write_after
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
        newer_write = summary is not None and await has_write_after(session, student_id, summary.refreshed_at)

    language = request_language(request)
    response.headers["Content-Language"] = language
    response.headers["Vary"] = "Accept-Language"
    if summary is None:
        return DashboardPublic(
            student_id=student_id,
            status="pending",
            refreshed_at=None,
            summary=None,
            detail=translate("dashboard.pending", language),
        )
    return DashboardPublic(
        student_id=student_id,
        status="refreshing" if newer_write else "fresh",
        refreshed_at=summary.refreshed_at,
        summary=SummaryPublic.model_validate(summary),
        detail=translate("dashboard.refreshing", language) if newer_write else None,
    )
