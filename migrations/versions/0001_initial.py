"""Jobs, payloads, events and artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("internal_id", sa.String(50), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("provider_request_id", sa.String(100)),
        sa.Column("adopted", sa.Boolean, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("polls", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TS),
        sa.Column("lease_until", TS),
        sa.Column("deadline_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("state_changed_at", TS, nullable=False),
        sa.Column("submitted_at", TS),
        sa.Column("issued_at", TS),
        sa.Column("doc_guid", sa.String(100)),
        sa.Column("doc_year", sa.Integer),
        sa.Column("doc_batch", sa.String(100)),
        sa.Column("doc_serial", sa.String(100)),
        sa.Column("xml_url", sa.Text),
        sa.Column("pdf_url", sa.Text),
        sa.Column("links_expires_at", TS),
        sa.Column("links_refreshed_at", TS),
        sa.Column("error_class", sa.String(32)),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.UniqueConstraint("provider", "entity", "internal_id", name="uq_jobs_provider_entity_internal_id"),
    )
    op.create_index("ix_jobs_due", "jobs", ["state", "next_attempt_at"])
    op.create_index("ix_jobs_internal_id", "jobs", ["internal_id"])
    op.create_table(
        "payloads",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16)),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer),
        sa.Column("error_class", sa.String(32)),
        sa.Column("provider_code", sa.String(64)),
        sa.Column("message", sa.Text),
    )
    op.create_index("ix_events_job_id", "events", ["job_id", "id"])
    op.create_table(
        "artifacts",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("job_id", "kind", name="uq_artifacts_job_kind"),
    )


def downgrade() -> None:
    op.drop_table("artifacts")
    op.drop_table("events")
    op.drop_table("payloads")
    op.drop_index("ix_jobs_internal_id", table_name="jobs")
    op.drop_index("ix_jobs_due", table_name="jobs")
    op.drop_table("jobs")
