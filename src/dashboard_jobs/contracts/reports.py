"""Contracts of the parent report generation."""

from __future__ import annotations

import uuid
from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from dashboard_jobs.contracts.base import Event
from dashboard_jobs.domain.periods import InvalidPeriodError, parse_period

ReportStatus = Literal["generated", "cached", "failed"]


class RequestedByAccount(BaseModel):
    """A person, authenticated with this role, asked for the report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["admin", "coach", "parent"]
    account_id: uuid.UUID


class RequestedBySchedule(BaseModel):
    """A schedule of the scheduler process asked for the report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schedule: str = Field(min_length=1, max_length=100)


class RequestedByCommand(BaseModel):
    """An operator asked for the report from the command line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: str = Field(min_length=1, max_length=100)


RequestedBy = RequestedByAccount | RequestedBySchedule | RequestedByCommand


def _canonical_period(value: str) -> str:
    # Format only, because whether the month has started depends on the reader's clock and
    # time zone. The report consumer checks that and records a failed outcome.
    try:
        return str(parse_period(value))
    except InvalidPeriodError as error:
        raise ValueError(error.message("en")) from None


class ParentReportRequestedV1(Event):
    """Command-like event: generate the report of one student for one period."""

    TYPE: ClassVar[str] = "PARENT_REPORT_REQUESTED"
    VERSION: ClassVar[int] = 1

    student_id: uuid.UUID
    period: str = Field(description="Calendar month YYYY-MM in the platform time zone.")
    regenerate: bool = Field(description="Recompute even when a report of this period exists.")
    requested_by: RequestedBy
    batch_id: uuid.UUID = Field(description="Groups the requests made together, for tracking.")

    @field_validator("period")
    @classmethod
    def _check_period(cls, value: str) -> str:
        return _canonical_period(value)


class ParentReportCompletedV1(Event):
    """The outcome of one report request: generated, reused from the cache, or failed."""

    TYPE: ClassVar[str] = "PARENT_REPORT_COMPLETED"
    VERSION: ClassVar[int] = 1

    student_id: uuid.UUID
    period: str
    report_id: uuid.UUID | None = Field(description="Null when the status is failed.")
    status: ReportStatus
    reason: str | None = Field(default=None, max_length=500, description="Why it failed; required when failed.")
    generated_at: AwareDatetime = Field(
        description="When the report's figures were computed (for a cached report, its original "
        "generation); for a failed request, when it failed."
    )
    batch_id: uuid.UUID

    @field_validator("period")
    @classmethod
    def _check_period(cls, value: str) -> str:
        return _canonical_period(value)

    @model_validator(mode="after")
    def _require_reason_when_failed(self) -> ParentReportCompletedV1:
        if self.status == "failed":
            if not self.reason:
                raise ValueError("reason is required when status is failed.")
            if self.report_id is not None:
                raise ValueError("report_id must be null when status is failed.")
        elif self.report_id is None:
            raise ValueError(f"report_id is required when status is {self.status}.")
        return self
