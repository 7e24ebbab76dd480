"""Counted provider requests per calendar month: the monthly half of a plan such as MSeller's.

The count is shared by every worker and must never pass the plan, even when many workers take a
request at the same moment. `DatabaseUsage.add` is therefore one statement, an upsert whose update
only applies while the sum stays within the limit: PostgreSQL (and SQLite) serialise the row, so a
refused increment adds nothing and the check and the write cannot be separated by another worker.
It satisfies `providers.mseller.budget.UsageStore` by shape, so models import nothing of providers.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from models.schema import Base, Timestamp


class ProviderUsage(Base):
    """Requests counted against a provider's plan in one month (`YYYY-MM`, UTC)."""

    __tablename__ = "provider_usage"

    provider: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    month: Mapped[str] = mapped_column(sa.String(7), primary_key=True)
    requests: Mapped[int] = mapped_column(sa.Integer)
    updated_at: Mapped[datetime] = mapped_column(Timestamp())


class DatabaseUsage:
    """Monthly request counts in the `provider_usage` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return f"DatabaseUsage({self.engine.url.render_as_string(hide_password=True)!r})"

    def add(self, provider: str, month: str, n: int, limit: int) -> int | None:
        """Add `n` unless the month's count would pass `limit` (0 = no limit); the new count, or None."""
        if n < 0:
            raise ValueError("a request count cannot go down")
        if limit > 0 and n > limit:
            return None
        table = _table()
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        now = datetime.now(UTC)
        guard = (table.c.requests + n <= limit) if limit > 0 else sa.true()
        statement = (
            insert(table)
            .values(provider=provider, month=month, requests=n, updated_at=now)
            .on_conflict_do_update(
                index_elements=[table.c.provider, table.c.month],
                set_={"requests": table.c.requests + n, "updated_at": now},
                where=guard,
            )
            .returning(table.c.requests)
        )
        with self.engine.begin() as conn:
            row = conn.execute(statement).first()
        return None if row is None else int(row[0])

    def used(self, provider: str, month: str) -> int:
        table = _table()
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(table.c.requests).where(table.c.provider == provider, table.c.month == month)
            ).scalar()
        return int(value or 0)

    def by_provider(self, month: str) -> dict[str, int]:
        """Every provider's count for `month`, for the gauges computed at scrape."""
        table = _table()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.provider, table.c.requests).where(table.c.month == month))
            return {str(provider): int(requests) for provider, requests in rows}


def _table() -> sa.Table:
    return Base.metadata.tables[ProviderUsage.__tablename__]
