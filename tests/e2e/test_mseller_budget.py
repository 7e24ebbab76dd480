"""MSeller on the `gratis` plan through real workers: the plan's pace is kept and polls are batched."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from models import make_engine
from models.usage import DatabaseUsage
from providers.mseller.budget import month_of
from providers.mseller.samples import sample_ecf
from tests.e2e.stack import Stack
from tests.harness import FINAL, sandbox_admin, wait_until

pytestmark = pytest.mark.e2e

DOCUMENTS = 50
GOAL_REQUESTS_PER_DOCUMENT = 4


def test_fifty_documents_on_the_free_plan_get_no_429_and_cost_at_most_four_requests_each(
    pg_stack: Stack, tmp_path: Path
) -> None:
    mseller = sandbox_admin(pg_stack.sandbox_url, "mseller")
    mseller("config", {"plan": "gratis", "processing_seconds": 2.0})
    pg_stack.env["MSELLER_PLAN"] = "gratis"
    folder = tmp_path / "do"
    folder.mkdir()
    for n in range(1, DOCUMENTS + 1):
        (folder / f"DO-{n:04d}.json").write_bytes(sample_ecf(n))
    # Two worker processes: the per-second bucket (Redis) and the month's count (database) are shared.
    workers = [pg_stack.worker("w1").start(), pg_stack.worker("w2", beat=False).start()]
    try:
        pg_stack.cli("submit", str(folder), "--provider", "mseller", "--pattern", "*.json")
        wait_until(
            lambda: len(pg_stack.states()) == DOCUMENTS and all(s in FINAL for s in pg_stack.states().values()),
            timeout=150,
            what="every document final",
        )
    finally:
        for worker in workers:
            worker.stop()
    assert set(pg_stack.states().values()) == {"retrieved"}
    totals = mseller("counters")["totals"]
    assert totals.get("status_429_throttled", 0) == 0 and totals.get("status_429_monthly", 0) == 0
    assert totals["sends"] == DOCUMENTS and totals.get("duplicates", 0) == 0, repr(totals)
    assert totals["counted"] / DOCUMENTS <= GOAL_REQUESTS_PER_DOCUMENT, totals
    engine = make_engine(pg_stack.env["DATABASE_URL"])
    try:
        assert DatabaseUsage(engine).used("mseller", month_of(datetime.now(UTC))) == totals["counted"]
    finally:
        engine.dispose()
