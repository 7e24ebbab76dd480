"""The monthly plan count every process shares: MSeller clients built here count in the database.

`providers/` stays free of the database, so the client asks `providers.mseller.budget` for its
monthly budget and we register the database-backed one there as soon as `worker.app` is imported:
the Celery worker and beat, the CLI and any ERP process using `worker.producer` all import it, so
all of them spend one count per account and month.
"""

from __future__ import annotations

import os
import threading

from sqlalchemy.engine import Engine

from models import make_engine
from models.usage import DatabaseUsage
from providers.mseller.budget import MonthlyBudget, PlanBudget, use_budget_factory

# Each call to the counter is one short statement: a small pool is plenty beside the task store's.
POOL_SIZE = 2

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


def _engine(url: str) -> Engine:
    """One engine per process and URL; keyed by pid so that a forked child never reuses the
    sockets of its parent's pool (the child's providers are rebuilt after the fork)."""
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            options = {} if url.startswith("sqlite") else {"pool_size": POOL_SIZE, "max_overflow": POOL_SIZE}
            engine = make_engine(url, **options)
            _engines[key] = engine
        return engine


def use_database_budget(database_url: str) -> None:
    """From now on, clients built from the environment count their requests in `provider_usage`."""

    def factory(provider: str, limit: int) -> MonthlyBudget:
        return PlanBudget(DatabaseUsage(_engine(database_url)), limit, provider=provider)

    use_budget_factory(factory)
