"""Credentials refused: the provider is paused for every worker and an alert is raised, instead of
retrying blindly (some providers lock the account after a few bad logins); after the operator fixes
the credentials and runs `einvoice resume`, the waiting jobs complete."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from tests.faults.conftest import FaultStack, batch
from tests.harness import wait_until

pytestmark = pytest.mark.faults

ACCEPTED = "6c1e0a4e-7d7b-4f43-9a57-2a0d4b0c9e11"
WRONG = "0f6b2a3c-1111-4e2d-8c3b-9d8e7f6a5b4c"


def test_refused_credentials_pause_the_provider_until_resumed(fault_stack: FaultStack) -> None:
    stack = fault_stack
    stack.admin("config", {"requestor": ACCEPTED})
    stack.env["MYSUITE_REQUESTOR"] = WRONG
    docs = batch("AUTH", 40, small_every=10)
    worker = stack.worker(concurrency=6)
    stack.submit(docs, "auth")

    wait_until(lambda: stack.store.pauses.provider_pause("mysuite") is not None, timeout=30, what="the provider paused")
    pause = stack.store.pauses.provider_pause("mysuite")
    assert pause is not None and pause.kind == "auth" and pause.until is None
    time.sleep(1.0)  # calls already on the wire when the pause was written
    calls_at_pause = stack.admin("counters")["totals"]["calls"]
    time.sleep(3.0)  # three sweep intervals: nothing may call the provider meanwhile
    counters = stack.admin("counters")
    assert counters["totals"]["calls"] == calls_at_pause, "calls stopped after the auth failures"
    assert calls_at_pause <= 12, f"only the first calls (at most one per worker thread or so): {calls_at_pause}"
    assert counters["totals"]["requests"] == 0 and counters["totals"]["issued"] == 0

    counts = stack.counts()
    assert counts == {"queued": len(docs)}, "jobs do not fail: they wait in their state"
    kinds = {
        e.error_class
        for job in stack.store.jobs.list_jobs()
        for e in stack.store.jobs.events(job.id)
        if e.kind == "error"
    }
    assert "auth" in kinds
    listed = json.loads(stack.cli("providers", "--json").stdout)
    assert [(p["provider"], p["kind"]) for p in listed] == [("mysuite", "auth")]
    assert "refused our credentials" in worker.log_text()
    assert any(" ERROR " in line and "refused our credentials" in line for line in worker.log_text().splitlines())

    # The operator fixes the credentials (workers restarted with the right ones) and resumes.
    worker.stop()
    stack.env["MYSUITE_REQUESTOR"] = ACCEPTED
    stack.worker("w2", concurrency=6)
    resumed = datetime.now(UTC)
    out = stack.cli("resume", "mysuite")
    assert "resumed" in out.stdout
    recovery = stack.progress_after(resumed)
    stack.wait_final(len(docs))
    stack.stop_workers()
    assert "no provider is paused" in stack.cli("providers").stdout
    row = stack.record("auth refused+resume", docs, recovery, calls_while_refused=calls_at_pause)
    assert row["final"].get("retrieved", 0) >= 30
