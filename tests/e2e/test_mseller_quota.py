"""A 429 from MSeller's monthly plan stops the whole account until an operator resumes it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from providers.mseller.samples import encf, sample_ecf
from tests.e2e.stack import Stack
from tests.harness import FINAL, sandbox_admin, wait_until

pytestmark = pytest.mark.e2e

DOCUMENTS = 8
MONTHLY = 4


def test_a_spent_month_pauses_the_account_and_resume_lifts_it(pg_stack: Stack, tmp_path: Path) -> None:
    mseller = sandbox_admin(pg_stack.sandbox_url, "mseller")
    mseller("config", {"plan": "gratis", "monthly_requests": MONTHLY, "processing_seconds": 0.5})
    folder = tmp_path / "do"
    folder.mkdir()
    for n in range(1, DOCUMENTS + 1):
        (folder / f"DO-{n:02d}.json").write_bytes(sample_ecf(n))

    def paused() -> list[dict[str, str]]:
        return [p for p in json.loads(pg_stack.cli("providers", "--json").stdout) if p["provider"] == "mseller"]

    worker = pg_stack.worker(concurrency=4).start()
    try:
        pg_stack.cli("submit", str(folder), "--provider", "mseller", "--pattern", "*.json")
        wait_until(lambda: bool(paused()), timeout=60, what="the MSeller account paused")
        (pause,) = paused()
        assert pause["kind"] == "quota" and pause["until"], pause
        settled = mseller("counters")["totals"]
        assert settled["counted"] == MONTHLY
        time.sleep(4)  # four sweeps: nobody calls a paused account
        assert mseller("counters")["totals"] == settled
        assert set(pg_stack.states().values()) <= {"queued", "submitted", "retrieved"}, "none is given up"

        mseller("config", {"monthly_requests": 0})  # the operator moves the account to a larger plan
        resumed = pg_stack.cli("resume", "mseller").stdout
        assert "resumed" in resumed and "quota" in resumed
        wait_until(
            lambda: all(s in FINAL for s in pg_stack.states().values()),
            timeout=90,
            what="every document final after the resume",
        )
    finally:
        worker.stop()
    assert set(pg_stack.states().values()) == {"retrieved"}
    assert paused() == []
    counters = mseller("counters")
    assert counters["totals"]["status_429_monthly"] >= 1
    for n in range(1, DOCUMENTS + 1):
        assert counters["ecfs"][encf(n)]["created"] == 1
