"""Create the domain tables, the summary read model, the outbox and the inbox.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIMESTAMPTZ = sa.DateTime(timezone=True)


def _created_at() -> sa.Column:
    return sa.Column("created_at", TIMESTAMPTZ, nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "students",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("first_name", sa.String(100), nullable=False),
        sa.Column("last_name", sa.String(100), nullable=False),
        sa.Column("grade", sa.String(10), nullable=False),
        _created_at(),
    )
    op.create_table(
        "accounts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        _created_at(),
        sa.CheckConstraint("role IN ('admin', 'coach', 'parent')", name="ck_accounts_role"),
    )
    op.create_table(
        "coach_students",
        sa.Column("coach_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("student_id", UUID(as_uuid=True), sa.ForeignKey("students.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_coach_students_student", "coach_students", ["student_id"])
    op.create_table(
        "parent_students",
        sa.Column("parent_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("student_id", UUID(as_uuid=True), sa.ForeignKey("students.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_parent_students_student", "parent_students", ["student_id"])

    op.create_table(
        "tasks",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("student_id", UUID(as_uuid=True), sa.ForeignKey("students.id", ondelete="CASCADE"), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(50), nullable=False),
        sa.Column("due_at", TIMESTAMPTZ, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="todo"),
        sa.Column("completed_at", TIMESTAMPTZ),
        sa.Column("created_by", UUID(as_uuid=True), sa.ForeignKey("accounts.id")),
        _created_at(),
        sa.Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('todo', 'in_progress', 'done')", name="ck_tasks_status"),
        sa.CheckConstraint("(status = 'done') = (completed_at IS NOT NULL)", name="ck_tasks_completed_at"),
    )
    op.create_index("ix_tasks_student_due", "tasks", ["student_id", "due_at"])

    op.create_table(
        "evaluations",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("student_id", UUID(as_uuid=True), sa.ForeignKey("students.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subject", sa.String(50), nullable=False),
        sa.Column("score", sa.Numeric(6, 2), nullable=False),
        sa.Column("max_score", sa.Numeric(6, 2), nullable=False),
        sa.Column("evaluated_at", TIMESTAMPTZ, nullable=False),
        sa.Column("created_by", UUID(as_uuid=True), sa.ForeignKey("accounts.id")),
        _created_at(),
        sa.CheckConstraint("max_score > 0 AND score >= 0 AND score <= max_score", name="ck_evaluations_score"),
    )
    op.create_index("ix_evaluations_student_at", "evaluations", ["student_id", "evaluated_at"])

    op.create_table(
        "tutoring_sessions",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("student_id", UUID(as_uuid=True), sa.ForeignKey("students.id", ondelete="CASCADE"), nullable=False),
        sa.Column("coach_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("starts_at", TIMESTAMPTZ, nullable=False),
        sa.Column("duration_minutes", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="planned"),
        _created_at(),
        sa.Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('planned', 'done', 'cancelled', 'no_show')", name="ck_sessions_status"),
        sa.CheckConstraint("duration_minutes > 0 AND duration_minutes <= 600", name="ck_sessions_duration"),
    )
    op.create_index("ix_sessions_student_starts", "tutoring_sessions", ["student_id", "starts_at"])

    op.create_table(
        "dashboard_summary",
        sa.Column("student_id", UUID(as_uuid=True), sa.ForeignKey("students.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("open_tasks", sa.Integer, nullable=False),
        sa.Column("overdue_tasks", sa.Integer, nullable=False),
        sa.Column("tasks_completed_7d", sa.Integer, nullable=False),
        sa.Column("completion_rate_30d", sa.Numeric(5, 4)),
        sa.Column("average_score_30d", sa.Numeric(5, 2)),
        sa.Column("last_evaluation_at", TIMESTAMPTZ),
        sa.Column("sessions_30d", sa.Integer, nullable=False),
        sa.Column("session_minutes_30d", sa.Integer, nullable=False),
        sa.Column("next_session_at", TIMESTAMPTZ),
        sa.Column("refreshed_at", TIMESTAMPTZ, nullable=False),
    )
    # Readers of the old materialized view keep working through a plain view of the same name.
    op.execute("CREATE VIEW mv_dashboard_summary AS SELECT * FROM dashboard_summary")

    op.create_table(
        "outbox",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("aggregatetype", sa.String(100), nullable=False),
        sa.Column("aggregateid", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        _created_at(),
        sa.Column("available_at", TIMESTAMPTZ, nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", TIMESTAMPTZ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
    )
    # The relay scans only unpublished rows, so a partial index keeps that scan small
    # however many published rows wait for the retention clean-up.
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["seq"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_index(
        "ix_outbox_published_at", "outbox", ["published_at"], postgresql_where=sa.text("published_at IS NOT NULL")
    )

    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("message_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("processed_at", TIMESTAMPTZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])


def downgrade() -> None:
    op.drop_table("inbox")
    op.drop_table("outbox")
    op.execute("DROP VIEW IF EXISTS mv_dashboard_summary")
    for table in (
        "dashboard_summary",
        "tutoring_sessions",
        "evaluations",
        "tasks",
        "parent_students",
        "coach_students",
        "accounts",
        "students",
    ):
        op.drop_table(table)
