"""Parent reports: bulk requests through the outbox, batch progress, and one report as JSON or HTML.

``POST /agents/reporter/bulk`` keeps the former reporter's body and ``reports[]`` result.
Reports already stored are returned at once (unless ``regenerate``). The others are
requested through the outbox and listed in ``pending``, to be read later from
``GET /agents/reporter/bulk/{batch_id}``. Both accept ``?wait=SECONDS`` (at most
MAX_WAIT_SECONDS) to wait for the pending reports before responding.

``GET /students/{id}/reports/{period}`` returns JSON, or an HTML page when the Accept
header prefers ``text/html`` over ``application/json`` (as browsers do). The page is in
French unless Accept-Language prefers English.

The bulk routes keep the former ``X-Role`` contract behind a trusted gateway (see
api/gateway.py). The report read takes its identity from the bearer token only, like the
other student routes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard_jobs.api.auth import CurrentPrincipal
from dashboard_jobs.api.dependencies import SessionFactory
from dashboard_jobs.api.gateway import GatewayPrincipal
from dashboard_jobs.api.problems import request_language
from dashboard_jobs.api.report_page import render_report_page
from dashboard_jobs.api.schemas import PROBLEM_RESPONSES, RequestModel
from dashboard_jobs.contracts.reports import RequestedByAccount
from dashboard_jobs.domain.access import Principal, ensure_can_access
from dashboard_jobs.domain.errors import Forbidden, InvalidInput, NotFound
from dashboard_jobs.domain.models import CoachStudent, ParentStudent, Role
from dashboard_jobs.domain.periods import InvalidPeriodError, Period, parse_period, utc_now
from dashboard_jobs.domain.report_models import Report
from dashboard_jobs.domain.report_requests import Batch, load_batch
from dashboard_jobs.domain.reports import load_reports
from dashboard_jobs.producers.reports import submit_report_batch, wait_for_batch
from dashboard_jobs.settings import Settings

router = APIRouter(tags=["reports"], responses=PROBLEM_RESPONSES)

MAX_WAIT_SECONDS = 30.0

# Problem message ids by InvalidPeriodError.reason; anything else is a format error.
PERIOD_MESSAGES = {"future": "period.future", "too_old": "period.too_old"}



class BulkReportCreate(RequestModel):
    student_ids: list[uuid.UUID] | None = Field(
        default=None, description="Students to report on. Admins may omit it to mean every student."
    )
    period: str = Field(description="Month YYYY-MM, not after the current month (Europe/Paris).")
    regenerate: bool = Field(default=False, description="Recompute reports that already exist.")


class ParentReportResponse(BaseModel):
    student_id: uuid.UUID
    period: str
    generated_at: datetime
    summary_md: str
    kpis: dict[str, Any]
    cached: bool = Field(description="True when the report was already stored, not generated for this request.")


class FailedReportPublic(BaseModel):
    student_id: uuid.UUID
    period: str
    reason: str | None


class BulkReportResponse(BaseModel):
    batch_id: uuid.UUID
    reports: list[ParentReportResponse] = Field(description="Reports available now.")
    pending: list[uuid.UUID] = Field(description="Students whose report is still being generated.")
    failed: list[FailedReportPublic] = Field(default_factory=list)


WaitSeconds = Query(default=0.0, description=f"Wait up to this many seconds (at most {MAX_WAIT_SECONDS:g}) for pending reports.")


@router.post("/agents/reporter/bulk")
async def request_bulk_reports(
    body: BulkReportCreate,
    principal: GatewayPrincipal,
    session_factory: SessionFactory,
    request: Request,
    wait: float = WaitSeconds,
) -> BulkReportResponse:
    """Return the stored reports and request the others through the outbox.

    Coaches and parents must list student_ids, all linked to them, or the whole request
    is rejected with 403.
    """
    settings: Settings = request.app.state.settings
    now = utc_now()
    period = _parse_period(body.period, now, settings)
    _check_wait(wait)
    student_ids = _requested_student_ids(body.student_ids, principal, settings)

    async with session_factory() as session, session.begin():
        if student_ids is not None:
            await _ensure_can_access_all(session, principal, student_ids)
        requested_by = RequestedByAccount(role=principal.role.value, account_id=principal.account_id)
        submission = await submit_report_batch(session, student_ids, period, body.regenerate, requested_by, now)

    if not submission.pending or wait <= 0:
        reports = [_report_response(report, cached=True) for report in submission.cached]
        return BulkReportResponse(batch_id=submission.batch_id, reports=reports, pending=submission.pending)
    return await _read_batch(session_factory, submission.batch_id, principal, wait)


@router.get("/agents/reporter/bulk/{batch_id}")
async def read_bulk_reports(
    batch_id: uuid.UUID,
    principal: GatewayPrincipal,
    session_factory: SessionFactory,
    wait: float = WaitSeconds,
) -> BulkReportResponse:
    """Return a batch's available reports and pending students; only to its requester or an admin."""
    _check_wait(wait)
    return await _read_batch(session_factory, batch_id, principal, wait)


@router.get(
    "/students/{student_id}/reports/{period}",
    response_model=ParentReportResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The report as JSON, or as an HTML page."}},
)
async def read_report(
    student_id: uuid.UUID,
    period: str,
    principal: CurrentPrincipal,
    session_factory: SessionFactory,
    request: Request,
    response: Response,
) -> ParentReportResponse | HTMLResponse:
    """Return the student's report of ``period``; an HTML page when Accept prefers text/html."""
    parsed = _parse_period(period, utc_now(), request.app.state.settings)
    async with session_factory() as session:
        await ensure_can_access(session, principal, student_id)
        reports = await load_reports(session, [student_id], str(parsed))
    if not reports:
        raise NotFound("report", student_id)

    report = reports[0]
    if prefers_html(request.headers.get("accept")):
        language = request_language(request)
        return HTMLResponse(
            render_report_page(report.payload, language),
            headers={"Content-Language": language, "Vary": "Accept, Accept-Language"},
        )
    # The same URL returns HTML for another Accept header, so caches must key on it.
    response.headers["Vary"] = "Accept"
    return _report_response(report, cached=True)


def prefers_html(accept: str | None) -> bool:
    """Return True when the Accept header ranks text/html above application/json."""
    html_quality, json_quality = 0.0, 0.0
    for item in (accept or "").split(","):
        media_range, *parameters = (part.strip().lower() for part in item.split(";"))
        quality = _quality(parameters)
        if media_range in {"text/html", "text/*"}:
            html_quality = max(html_quality, quality)
        if media_range in {"application/json", "application/*"}:
            json_quality = max(json_quality, quality)
        if media_range == "*/*":
            html_quality, json_quality = max(html_quality, quality), max(json_quality, quality)
    return html_quality > json_quality


def _quality(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


async def _read_batch(
    session_factory: SessionFactory, batch_id: uuid.UUID, principal: Principal, wait: float
) -> BulkReportResponse:
    async with session_factory() as session:
        batch = await load_batch(session, batch_id)
    _ensure_can_read_batch(batch, batch_id, principal)
    if wait > 0 and not batch.complete:
        batch = await wait_for_batch(session_factory, batch_id, wait)
    async with session_factory() as session:
        return await _batch_response(session, batch)


async def _batch_response(session: AsyncSession, batch: Batch) -> BulkReportResponse:
    done = {request.report_id: request for request in batch.requests if request.report_id is not None}
    reports = (await session.scalars(select(Report).where(Report.id.in_(list(done))))).all() if done else []
    return BulkReportResponse(
        batch_id=batch.batch_id,
        reports=[_report_response(r, cached=done[r.id].status == "cached") for r in reports],
        pending=[request.student_id for request in batch.pending],
        failed=[
            FailedReportPublic(student_id=r.student_id, period=r.period, reason=r.reason)
            for r in batch.requests
            if r.status == "failed"
        ],
    )


def _report_response(report: Report, *, cached: bool) -> ParentReportResponse:
    return ParentReportResponse(
        student_id=report.student_id,
        period=report.period,
        generated_at=report.generated_at,
        summary_md=report.summary_md,
        kpis=report.kpis_json,
        cached=cached,
    )


def _parse_period(value: str, now: datetime, settings: Settings) -> Period:
    try:
        return parse_period(value, now=now, timezone=settings.timezone)
    except InvalidPeriodError as error:
        raise InvalidInput("period", value, PERIOD_MESSAGES.get(error.reason, "period.invalid")) from None


def _check_wait(wait: float) -> None:
    if not 0 <= wait <= MAX_WAIT_SECONDS:
        raise InvalidInput("wait", wait, "wait.out_of_range", max=int(MAX_WAIT_SECONDS))


def _requested_student_ids(
    student_ids: list[uuid.UUID] | None, principal: Principal, settings: Settings
) -> list[uuid.UUID] | None:
    if student_ids is None:
        if principal.role is not Role.ADMIN:
            raise Forbidden("all_students_admin_only")
        # NOTE: bulk_report_max_students does not cap an admin request for every student, so
        # its response lists every cached report of the school. A large school needs paging.
        return None
    unique = list(dict.fromkeys(student_ids))
    if not unique:
        raise InvalidInput("student_ids", student_ids, "student_ids.empty")
    if len(unique) > settings.bulk_report_max_students:
        raise InvalidInput("student_ids", len(unique), "student_ids.too_many", max=settings.bulk_report_max_students)
    return unique


async def _ensure_can_access_all(session: AsyncSession, principal: Principal, student_ids: list[uuid.UUID]) -> None:
    """Raise Forbidden unless every student is linked to a coach or parent; admins reach all.

    One Forbidden covers the whole request, whichever ids are foreign or unknown, so the
    response reveals nothing about them.
    """
    if principal.role is Role.ADMIN:
        return
    link = CoachStudent if principal.role is Role.COACH else ParentStudent
    owner = link.coach_id if principal.role is Role.COACH else link.parent_id
    linked = await session.scalar(
        select(func.count()).where(owner == principal.account_id, link.student_id.in_(student_ids))
    )
    if linked != len(student_ids):
        raise Forbidden()


def _ensure_can_read_batch(batch: Batch | None, batch_id: uuid.UUID, principal: Principal) -> None:
    if principal.role is Role.ADMIN:
        if batch is None:
            raise NotFound("report_batch", batch_id)
        return
    if batch is None or batch.requester_account_id != principal.account_id:
        raise Forbidden("report_batch_access")
