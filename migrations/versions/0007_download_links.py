"""The download link of a package, kept from the moment SAT counts the download.

SAT counts a package download when its link is handed out, not when the copy arrives; a transfer cut
short is resumed from the kept link instead of spending another of SAT's two downloads.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("download_packages") as batch:
        batch.add_column(sa.Column("link", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("download_packages") as batch:
        batch.drop_column("link")
