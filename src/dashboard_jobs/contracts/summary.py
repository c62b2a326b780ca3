"""Contracts of the dashboard summary refresh."""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import AwareDatetime, Field, field_validator

from dashboard_jobs.contracts.base import Event

MAX_STUDENTS_PER_REQUEST = 1_000


class DashboardSummaryRefreshRequestedV1(Event):
    """Command-like event: recompute the dashboard summary of these students."""

    TYPE: ClassVar[str] = "DASHBOARD_SUMMARY_REFRESH_REQUESTED"
    VERSION: ClassVar[int] = 1

    student_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_STUDENTS_PER_REQUEST)
    reason: str = Field(min_length=1, max_length=200)
    requested_at: AwareDatetime

    @field_validator("student_ids")
    @classmethod
    def _reject_duplicates(cls, value: list[uuid.UUID]) -> list[uuid.UUID]:
        if len(set(value)) != len(value):
            raise ValueError("student_ids contains duplicates; list each student once.")
        return value


class DashboardSummaryRefreshCompletedV1(Event):
    """The summaries of these students were recomputed for the listed requests."""

    TYPE: ClassVar[str] = "DASHBOARD_SUMMARY_REFRESH_COMPLETED"
    VERSION: ClassVar[int] = 1

    student_ids: list[uuid.UUID] = Field(description="Students whose summary was refreshed.")
    skipped_student_ids: list[uuid.UUID] = Field(
        default_factory=list, description="Requested students that do not exist."
    )
    request_message_ids: list[uuid.UUID] = Field(
        min_length=1, description="Message ids of the refresh requests this refresh covers."
    )
    refreshed_at: AwareDatetime
