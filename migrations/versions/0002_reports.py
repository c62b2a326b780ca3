"""Create the parent reports, the report requests of each batch and the schedule fires.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMESTAMPTZ = sa.DateTime(timezone=True)
PERIOD_CHECK = r"period ~ '^\d{4}-(0[1-9]|1[0-2])$'"


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("student_id", UUID(as_uuid=True), sa.ForeignKey("students.id", ondelete="CASCADE"), nullable=False),
        sa.Column("period", sa.CHAR(7), nullable=False),
        sa.Column("summary_md", sa.Text, nullable=False),
        sa.Column("kpis_json", JSONB, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("locale", sa.String(10), nullable=False),
        sa.Column("template_version", sa.Integer, nullable=False),
        sa.Column("generated_at", TIMESTAMPTZ, nullable=False),
        sa.UniqueConstraint("student_id", "period", name="uq_reports_student_period"),
        sa.CheckConstraint(PERIOD_CHECK, name="ck_reports_period"),
    )

    # One row per student and period of a batch, so a batch's progress survives the
    # outbox retention and can be read back by its requester.
    op.create_table(
        "report_requests",
        sa.Column("batch_id", UUID(as_uuid=True), primary_key=True),
        # No foreign key: a request for an unknown student is kept and answered as failed.
        sa.Column("student_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("period", sa.CHAR(7), primary_key=True),
        sa.Column("regenerate", sa.Boolean, nullable=False),
        sa.Column("requested_by", JSONB, nullable=False),
        sa.Column("requester_account_id", UUID(as_uuid=True)),
        sa.Column("created_at", TIMESTAMPTZ, nullable=False, server_default=sa.func.now()),
        sa.Column("status", sa.String(20)),
        sa.Column("report_id", UUID(as_uuid=True)),
        sa.Column("reason", sa.Text),
        sa.Column("completed_at", TIMESTAMPTZ),
        sa.CheckConstraint(PERIOD_CHECK, name="ck_report_requests_period"),
        sa.CheckConstraint(
            "status IS NULL OR status IN ('generated', 'cached', 'failed')", name="ck_report_requests_status"
        ),
        sa.CheckConstraint("(status IS NULL) = (completed_at IS NULL)", name="ck_report_requests_completed_at"),
    )

    op.create_table(
        "schedule_fires",
        sa.Column("schedule", sa.String(100), primary_key=True),
        sa.Column("fire_at", TIMESTAMPTZ, primary_key=True),
        sa.Column("enqueued_at", TIMESTAMPTZ, nullable=False, server_default=sa.func.now()),
        sa.Column("status", sa.String(20), nullable=False),
        sa.CheckConstraint("status IN ('enqueued', 'skipped')", name="ck_schedule_fires_status"),
    )


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_table("report_requests")
    op.drop_table("reports")
