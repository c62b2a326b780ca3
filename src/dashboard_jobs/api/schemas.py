"""Request and response bodies of the API: *Create and *Update in, *Public out.

Request schemas check shapes, types and the accepted range of dates. The domain rules (known
subject, score range, duration, time zone) are checked by the write services, so every caller
gets them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dashboard_jobs.domain.models import SessionStatus, TaskStatus
from dashboard_jobs.domain.services import DEFAULT_MAX_SCORE, MAX_SESSION_MINUTES, MAX_TITLE_LENGTH
from dashboard_jobs.domain.subjects import SUBJECTS

SUBJECT_FIELD = {"description": "One of the collège subjects.", "json_schema_extra": {"enum": list(SUBJECTS)}}


def _reject_nul_character(value: str) -> str:
    # PostgreSQL text columns cannot store U+0000, so the INSERT would fail with a 500.
    if "\x00" in value:
        raise PydanticCustomError("string_nul_character", "The text contains the NUL character (U+0000).")
    return value


StoredText = Annotated[str, AfterValidator(_reject_nul_character)]
"""Free text that is stored in a text column."""

# Dates outside these years are typing mistakes. At the ends of the calendar (years 1 and 9999)
# converting a date to UTC for storage overflows, and the write would fail with a 500.
MIN_ACCEPTED_YEAR = 2000
MAX_ACCEPTED_YEAR = 2100

# How far past the server's clock an evaluation date may be, because a client's clock can run
# a few minutes fast. An evaluation is recorded after it happens, so a later date is rejected.
EVALUATION_CLOCK_SKEW = timedelta(minutes=5)


def _check_accepted_year(value: datetime) -> datetime:
    # The year is read in the value's own offset, because converting year 1 or 9999 to UTC
    # may overflow. Inside the window the conversion is always safe.
    if not MIN_ACCEPTED_YEAR <= value.year <= MAX_ACCEPTED_YEAR:
        raise PydanticCustomError(
            "datetime_out_of_range",
            "The date's year must be between {min} and {max}.",
            {"min": MIN_ACCEPTED_YEAR, "max": MAX_ACCEPTED_YEAR},
        )
    return value


def _reject_future(value: datetime) -> datetime:
    # A date without an offset cannot be compared with the clock, and the write service rejects it.
    if value.utcoffset() is not None and value > datetime.now(UTC) + EVALUATION_CLOCK_SKEW:
        raise PydanticCustomError("datetime_in_future", "An evaluation cannot be dated in the future.")
    return value


AcceptedDatetime = Annotated[datetime, AfterValidator(_check_accepted_year)]
"""A date and time whose year is between MIN_ACCEPTED_YEAR and MAX_ACCEPTED_YEAR."""

PastDatetime = Annotated[AcceptedDatetime, AfterValidator(_reject_future)]
"""An accepted date and time no later than now, give or take EVALUATION_CLOCK_SKEW."""

AWARE_DATETIME_DESCRIPTION = (
    f"ISO 8601 date and time with a time zone offset, in the years {MIN_ACCEPTED_YEAR} to {MAX_ACCEPTED_YEAR}."
)


class RequestModel(BaseModel):
    # Unknown members are rejected so that a misspelt field is an error, not a silent no-op.
    model_config = ConfigDict(extra="forbid")


class PartialUpdate(RequestModel):
    """A change of some fields: each field may be omitted but not null, and one is required."""

    @field_validator("*", mode="before")
    @classmethod
    def _reject_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("null_not_allowed", "This field may be omitted but cannot be null.")
        return value

    @model_validator(mode="after")
    def _require_a_field(self) -> PartialUpdate:
        if not self.model_fields_set:
            raise PydanticCustomError(
                "update_empty",
                "Give at least one field to change among: {fields}.",
                {"fields": ", ".join(type(self).model_fields)},
            )
        return self


class TaskCreate(RequestModel):
    title: StoredText = Field(description=f"1 to {MAX_TITLE_LENGTH} characters.")
    subject: str = Field(**SUBJECT_FIELD)
    due_at: AcceptedDatetime = Field(description=AWARE_DATETIME_DESCRIPTION)


class TaskUpdate(PartialUpdate):
    title: StoredText | None = Field(default=None, description=f"1 to {MAX_TITLE_LENGTH} characters.")
    subject: str | None = Field(default=None, **SUBJECT_FIELD)
    due_at: AcceptedDatetime | None = Field(default=None, description=AWARE_DATETIME_DESCRIPTION)
    status: str | None = Field(
        default=None,
        description="Setting done records the completion time; any other status clears it.",
        json_schema_extra={"enum": [status.value for status in TaskStatus]},
    )


class EvaluationCreate(RequestModel):
    subject: str = Field(**SUBJECT_FIELD)
    score: Decimal = Field(description="From 0 to max_score, at most 2 decimal places.")
    max_score: Decimal = Field(default=DEFAULT_MAX_SCORE, description="Greater than 0, at most 2 decimal places.")
    evaluated_at: PastDatetime | None = Field(
        default=None,
        description=f"{AWARE_DATETIME_DESCRIPTION} Not in the future. Defaults to the time of the request.",
    )


SESSION_STATUS_FIELD = {"json_schema_extra": {"enum": [status.value for status in SessionStatus]}}
DURATION_DESCRIPTION = f"Whole minutes, 1 to {MAX_SESSION_MINUTES}."


class SessionCreate(RequestModel):
    starts_at: AcceptedDatetime = Field(description=AWARE_DATETIME_DESCRIPTION)
    duration_minutes: int = Field(description=DURATION_DESCRIPTION)
    status: str = Field(default=SessionStatus.PLANNED.value, **SESSION_STATUS_FIELD)
    coach_id: uuid.UUID | None = Field(
        default=None,
        description="The coach who leads the session. Required for an admin; a coach may omit it "
        "or give their own account id.",
    )


class SessionUpdate(PartialUpdate):
    starts_at: AcceptedDatetime | None = Field(default=None, description=AWARE_DATETIME_DESCRIPTION)
    duration_minutes: int | None = Field(default=None, description=DURATION_DESCRIPTION)
    status: str | None = Field(default=None, **SESSION_STATUS_FIELD)


class PublicModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TaskPublic(PublicModel):
    id: uuid.UUID
    student_id: uuid.UUID
    title: str
    subject: str
    due_at: datetime
    status: str
    completed_at: datetime | None
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class EvaluationPublic(PublicModel):
    id: uuid.UUID
    student_id: uuid.UUID
    subject: str
    score: float
    max_score: float
    evaluated_at: datetime
    created_by: uuid.UUID | None
    created_at: datetime


class SessionPublic(PublicModel):
    id: uuid.UUID
    student_id: uuid.UUID
    coach_id: uuid.UUID
    starts_at: datetime
    duration_minutes: int
    status: str
    created_at: datetime
    updated_at: datetime


class SummaryPublic(PublicModel):
    open_tasks: int
    overdue_tasks: int
    tasks_completed_7d: int
    completion_rate_30d: float | None = Field(description="Share of the tasks due in the last 30 days that are done, 0 to 1.")
    average_score_30d: float | None = Field(description="Mean score over the last 30 days, out of 20.")
    last_evaluation_at: datetime | None
    sessions_30d: int
    session_minutes_30d: int
    next_session_at: datetime | None


class DashboardPublic(BaseModel):
    student_id: uuid.UUID
    status: Literal["fresh", "refreshing", "pending"] = Field(
        description="fresh: no write came after refreshed_at. refreshing: a write came after "
        "refreshed_at and its refresh is on its way, so the summary below is older than it. "
        "pending: no summary was computed yet for this student."
    )
    refreshed_at: datetime | None
    summary: SummaryPublic | None
    detail: str | None = Field(default=None, description="Why the summary is missing or older than the latest write.")


class HealthPublic(BaseModel):
    status: Literal["live", "ready"]


class FieldProblemPublic(BaseModel):
    field: str
    location: str = Field(description="Where the field is: body, path, query or header.")
    code: str
    value: Any = Field(default=None, description="The rejected value, absent for a missing field.")
    message: str


class ProblemPublic(BaseModel):
    """An RFC 9457 problem details body."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldProblemPublic] | None = None
    error_id: str | None = None


_PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemPublic"}}}

# OpenAPI documentation of the problem responses every authenticated route can return.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ProblemPublic, "content": _PROBLEM_CONTENT, "description": "Missing, invalid or expired token."},
    403: {
        "model": ProblemPublic,
        "content": _PROBLEM_CONTENT,
        "description": "The caller may not reach this student, or does not exist for this caller.",
    },
    404: {"model": ProblemPublic, "content": _PROBLEM_CONTENT, "description": "Unknown id (admins only)."},
    422: {"model": ProblemPublic, "content": _PROBLEM_CONTENT, "description": "Invalid input; errors lists each field."},
}
