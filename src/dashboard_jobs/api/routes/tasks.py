"""Task writes: create, change and complete a student's tasks."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter

from dashboard_jobs.api.auth import CurrentPrincipal
from dashboard_jobs.api.dependencies import CorrelationId, SessionFactory
from dashboard_jobs.api.problems import student_access_reworded
from dashboard_jobs.api.schemas import PROBLEM_RESPONSES, ProblemPublic, TaskCreate, TaskPublic, TaskUpdate
from dashboard_jobs.domain import services
from dashboard_jobs.domain.models import Task
from dashboard_jobs.domain.services import Written

log = logging.getLogger(__name__)

router = APIRouter(tags=["tasks"], responses=PROBLEM_RESPONSES)


@router.post("/students/{student_id}/tasks", status_code=201)
async def create_task(
    student_id: uuid.UUID,
    body: TaskCreate,
    principal: CurrentPrincipal,
    session_factory: SessionFactory,
    correlation_id: CorrelationId = None,
) -> TaskPublic:
    """Create a task for a student and request a refresh of the student's summary."""
    async with session_factory() as session, session.begin():
        written = await services.create_task(
            session,
            principal,
            student_id,
            title=body.title,
            subject=body.subject,
            due_at=body.due_at,
            correlation_id=correlation_id,
        )

    _log_write("task created", written, correlation_id)
    return TaskPublic.model_validate(written.row)


@router.patch("/tasks/{task_id}")
async def update_task(
    task_id: uuid.UUID,
    body: TaskUpdate,
    principal: CurrentPrincipal,
    session_factory: SessionFactory,
    correlation_id: CorrelationId = None,
) -> TaskPublic:
    """Change a task's title, subject, due date or status."""
    with student_access_reworded("task"):
        async with session_factory() as session, session.begin():
            written = await services.update_task(
                session, principal, task_id, **body.model_dump(exclude_unset=True), correlation_id=correlation_id
            )

    _log_write("task updated", written, correlation_id)
    return TaskPublic.model_validate(written.row)


@router.post(
    "/tasks/{task_id}/complete",
    responses={409: {"model": ProblemPublic, "description": "The task is already done."}},
)
async def complete_task(
    task_id: uuid.UUID,
    principal: CurrentPrincipal,
    session_factory: SessionFactory,
    correlation_id: CorrelationId = None,
) -> TaskPublic:
    """Mark a task done now."""
    with student_access_reworded("task"):
        async with session_factory() as session, session.begin():
            written = await services.complete_task(session, principal, task_id, correlation_id=correlation_id)

    _log_write("task completed", written, correlation_id)
    return TaskPublic.model_validate(written.row)


def _log_write(message: str, written: Written[Task], correlation_id: uuid.UUID | None) -> None:
    log.info(
        message,
        extra={
            "student_id": str(written.row.student_id),
            "task_id": str(written.row.id),
            "outbox_id": str(written.outbox_id),
            "correlation_id": str(correlation_id) if correlation_id else None,
        },
    )
