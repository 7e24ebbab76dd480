"""Job kinds, generic fiscal ids, and the breaker's failure count beside its pause.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(32), nullable=False, server_default="invoice"))
        batch.add_column(sa.Column("parent_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("doc_fiscal_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("doc_extra", sa.JSON, nullable=True))
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])
    with op.batch_alter_table("provider_pauses") as batch:
        batch.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
    op.execute("UPDATE jobs SET doc_fiscal_id = doc_guid WHERE doc_guid IS NOT NULL")


def downgrade() -> None:
    op.execute("DELETE FROM provider_pauses WHERE kind = 'closed'")
    with op.batch_alter_table("provider_pauses") as batch:
        batch.drop_column("failures")
    op.drop_index("ix_jobs_parent_id", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("doc_extra")
        batch.drop_column("doc_fiscal_id")
        batch.drop_column("parent_id")
        batch.drop_column("kind")
