"""The monthly budget: atomic on PostgreSQL under concurrency, rolling over on the 1st (UTC)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from models import make_engine
from models.usage import DatabaseUsage
from providers.mseller import AccountPausedError, InProcessBudget
from providers.mseller.budget import PlanBudget, month_of, next_month_start


def test_months_roll_over_on_the_first_at_midnight_utc() -> None:
    assert next_month_start(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert month_of(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)) == "2026-11"
    assert next_month_start(datetime(2026, 11, 30, 23, 0, tzinfo=UTC)) == datetime(2026, 12, 1, tzinfo=UTC)


def test_in_process_budget_refuses_past_the_limit_and_resets_next_month() -> None:
    now = [datetime(2026, 11, 30, 12, 0, tzinfo=UTC)]
    budget = InProcessBudget(3, clock=lambda: now[0])
    budget.take(2)
    with pytest.raises(AccountPausedError) as caught:
        budget.take(2)
    assert caught.value.resume_at == datetime(2026, 12, 1, tzinfo=UTC)
    budget.take(1)
    assert budget.usage() == (3, 3)
    now[0] = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    assert budget.usage() == (0, 3)
    budget.take(3)


def test_database_budget_never_passes_the_limit_under_concurrency(migrated_pg_url: str) -> None:
    engine = make_engine(migrated_pg_url, pool_size=8, max_overflow=0)
    usage = DatabaseUsage(engine)
    budget = PlanBudget(usage, 137, provider="mseller")
    granted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(25):
            try:
                budget.take(1)
            except AccountPausedError:
                with lock:
                    refused.append(1)
            else:
                with lock:
                    granted.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 137 and len(refused) == 200 - 137
    assert budget.usage() == (137, 137)
    # Another provider and another month are counted apart.
    assert usage.add("hacienda", month_of(datetime.now(UTC)), 5, 0) == 5
    assert usage.add("mseller", "2099-01", 137, 137) == 137
    assert usage.by_provider(month_of(datetime.now(UTC))) == {"mseller": 137, "hacienda": 5}
    engine.dispose()


def test_database_budget_refuses_a_first_take_larger_than_the_limit(migrated_pg_url: str) -> None:
    engine = make_engine(migrated_pg_url)
    usage = DatabaseUsage(engine)
    assert usage.add("mseller", "2026-11", 5, 4) is None
    assert usage.used("mseller", "2026-11") == 0
    assert usage.add("mseller", "2026-11", 4, 4) == 4
    assert usage.add("mseller", "2026-11", 1, 4) is None
    assert usage.add("mseller", "2026-11", 10, 0) == 14
    engine.dispose()


def test_database_budget_on_sqlite(tmp_path: object) -> None:
    from worker.schema import upgrade

    url = f"sqlite:///{tmp_path}/usage.db"
    upgrade(url)
    engine = make_engine(url)
    budget = PlanBudget(DatabaseUsage(engine), 2)
    budget.take()
    budget.take()
    with pytest.raises(AccountPausedError):
        budget.take()
    assert budget.usage() == (2, 2)
    engine.dispose()


def test_plan_gauges_come_from_the_database(migrated_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import Store
    from worker.metrics import DatabaseCollector

    monkeypatch.setenv("MSELLER_PLAN", "gratis")
    engine = make_engine(migrated_pg_url)
    DatabaseUsage(engine).add("mseller", month_of(datetime.now(UTC)), 250, 1000)
    DatabaseUsage(engine).add("mseller", "2001-01", 999, 1000)
    metrics = {metric.name: metric for metric in DatabaseCollector(Store(engine), ["mseller"]).collect()}
    used = {s.labels["provider"]: s.value for s in metrics["einvoice_provider_requests_month"].samples}
    share = {s.labels["provider"]: s.value for s in metrics["einvoice_provider_plan_share"].samples}
    assert used == {"mseller": 250} and share == {"mseller": 0.25}
    engine.dispose()
