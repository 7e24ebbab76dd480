"""CFDI index (one row per UUID) and the packages of download requests.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cfdi",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("issuer_rfc", sa.String(20)),
        sa.Column("issuer_name", sa.String(300)),
        sa.Column("receiver_rfc", sa.String(20)),
        sa.Column("receiver_name", sa.String(300)),
        sa.Column("issued_at", TS),
        sa.Column("certified_at", TS),
        sa.Column("total", sa.Numeric(24, 6)),
        sa.Column("type", sa.String(16)),
        sa.Column("status", sa.String(16)),
        sa.Column("cancelled_at", TS),
        sa.Column("pac_rfc", sa.String(20)),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_cfdi_direction_issued_at", "cfdi", ["direction", "issued_at"])
    op.create_index("ix_cfdi_issuer_rfc", "cfdi", ["issuer_rfc"])
    op.create_index("ix_cfdi_receiver_rfc", "cfdi", ["receiver_rfc"])
    op.create_table(
        "download_packages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("package_id", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("downloads", sa.Integer, nullable=False),
        sa.Column("path", sa.Text),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("cfdi_count", sa.Integer),
        sa.Column("skipped_count", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("package_id", name="uq_download_packages_package_id"),
    )
    op.create_index("ix_download_packages_job_id", "download_packages", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_download_packages_job_id", table_name="download_packages")
    op.drop_table("download_packages")
    op.drop_index("ix_cfdi_receiver_rfc", table_name="cfdi")
    op.drop_index("ix_cfdi_issuer_rfc", table_name="cfdi")
    op.drop_index("ix_cfdi_direction_issued_at", table_name="cfdi")
    op.drop_table("cfdi")
