"""SQLAlchemy mappings of the parent reports, the report requests and the schedule fires.

The schema comes from migration 0002; these mappings only describe it for queries.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CHAR, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from dashboard_jobs.domain.models import Base


class Report(Base):
    """The parent report of one student for one period; regenerating it updates the row."""

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("student_id", "period", name="uq_reports_student_period"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id", ondelete="CASCADE"))
    period: Mapped[str] = mapped_column(CHAR(7))
    summary_md: Mapped[str] = mapped_column(Text)
    kpis_json: Mapped[dict[str, Any]] = mapped_column(JSONB)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    locale: Mapped[str] = mapped_column(String(10))
    template_version: Mapped[int] = mapped_column(Integer)
    generated_at: Mapped[datetime]


class ReportRequest(Base):
    """One student and period requested in a batch, with its outcome once processed."""

    __tablename__ = "report_requests"

    batch_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    student_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(CHAR(7), primary_key=True)
    regenerate: Mapped[bool] = mapped_column(Boolean)
    requested_by: Mapped[dict[str, Any]] = mapped_column(JSONB)
    requester_account_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    status: Mapped[str | None] = mapped_column(String(20))
    report_id: Mapped[uuid.UUID | None]
    reason: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None]


class ScheduleFire(Base):
    """One fire time of a schedule; the primary key makes each fire happen once."""

    __tablename__ = "schedule_fires"

    schedule: Mapped[str] = mapped_column(String(100), primary_key=True)
    fire_at: Mapped[datetime] = mapped_column(primary_key=True)
    enqueued_at: Mapped[datetime] = mapped_column(server_default=func.now())
    status: Mapped[str] = mapped_column(String(20))
