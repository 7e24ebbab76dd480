"""The whole pipeline with real parts: PostgreSQL, Redis, Celery workers, the sandbox over HTTP.

Invoices go in through the `einvoice` CLI, as an ERP integration would; workers are separate
processes; the test reads the database and the sandbox's counters to check the outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.e2e.stack import Stack, check_outcome, write_batch
from tests.harness import FINAL, wait_until
from worker.samples import native_xml

pytestmark = pytest.mark.e2e


def test_batch_reaches_final_states_on_postgresql_and_redis(pg_stack: Stack, tmp_path: Path) -> None:
    pg_stack.admin("config", {"failure_rate": 0.1})
    docs = write_batch(tmp_path / "batch", 55, "PG")
    worker = pg_stack.worker(pool="prefork", concurrency=2).start()
    try:
        pg_stack.submit_batch(tmp_path / "batch")
        wait_until(
            lambda: all(s in FINAL for s in pg_stack.states().values()) and len(pg_stack.states()) == len(docs),
            timeout=150,
            what="every invoice in a final state",
        )
    finally:
        worker.stop()
    tally = check_outcome(pg_stack, docs, "PG")
    assert tally["retrieved"] >= 45
    assert tally.get("failed", 0) >= 1
    status = json.loads(pg_stack.cli("status", "PG-000", "--json").stdout)
    assert {
        "id",
        "provider",
        "internal_id",
        "state",
        "provider_request_id",
        "document",
        "links",
        "error",
        "attempts",
        "polls",
    } <= set(status)
    events = json.loads(pg_stack.cli("events", "PG-000", "--json").stdout)
    assert events[0]["to_state"] == "queued" and all(
        {"at", "kind", "from_state", "to_state", "message"} <= set(e) for e in events
    )
    listed = json.loads(pg_stack.cli("list", "--state", "invalid", "--json").stdout)
    assert [item["internal_id"] for item in listed] == ["PG-BAD"]


def test_enqueued_twice_is_one_job_and_one_submission(pg_stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "twice.xml"
    path.write_bytes(native_xml("TWICE-1", 9000))
    first = json.loads(pg_stack.cli("submit", str(path), "--internal-id", "TWICE-1", "--json").stdout)
    second = json.loads(pg_stack.cli("submit", str(path), "--internal-id", "TWICE-1", "--json").stdout)
    assert first["id"] == second["id"] and first["created"] and not second["created"]
    worker = pg_stack.worker().start()
    try:
        wait_until(lambda: pg_stack.states().get("TWICE-1") == "retrieved", timeout=60, what="retrieved")
    finally:
        worker.stop()
    counters = pg_stack.admin("counters")["async"]["TWICE-1"]
    assert (counters["calls"], counters["documents"]) == (1, 1)
    assert len(pg_stack.store.jobs.list_jobs()) == 1


def test_links_are_refreshed_before_they_expire(pg_stack: Stack, tmp_path: Path) -> None:
    pg_stack.admin("config", {"link_ttl_seconds": 8})
    pg_stack.env.update({"MYSUITE_LINK_TTL_SECONDS": "8", "EINVOICE_LINKS_REFRESH_BEFORE_SECONDS": "5"})
    path = tmp_path / "links.xml"
    path.write_bytes(native_xml("LINKS-1", 9000))
    pg_stack.cli("submit", str(path), "--internal-id", "LINKS-1")
    worker = pg_stack.worker().start()
    try:
        wait_until(lambda: pg_stack.states().get("LINKS-1") == "retrieved", timeout=60, what="retrieved")
        job = pg_stack.store.jobs.resolve("LINKS-1")
        first_links, first_expiry = (job.xml_url, job.pdf_url), job.links_expires_at
        wait_until(
            lambda: any(e.kind == "links" for e in pg_stack.store.jobs.events(job.id)),
            timeout=30,
            what="a links refresh event",
        )
    finally:
        worker.stop()
    job = pg_stack.store.jobs.get(job.id)
    assert (job.xml_url, job.pdf_url) != first_links
    assert job.links_expires_at is not None and first_expiry is not None and job.links_expires_at > first_expiry
    refresh = next(e for e in pg_stack.store.jobs.events(job.id) if e.kind == "links")
    assert "http" not in (refresh.message or "")  # events never hold the links themselves


def test_lost_messages_are_recovered_by_the_sweep(pg_stack: Stack, redis_url: str, tmp_path: Path) -> None:
    docs = write_batch(tmp_path / "lost", 10, "LOST")
    pg_stack.submit_batch(tmp_path / "lost")
    redis.Redis.from_url(redis_url).flushdb()  # every published message is gone
    worker = pg_stack.worker().start()
    try:
        wait_until(
            lambda: all(s in FINAL for s in pg_stack.states().values()),
            timeout=90,
            what="jobs recovered from the database",
        )
    finally:
        worker.stop()
    check_outcome(pg_stack, docs, "LOST")


def test_operator_links_and_retry_commands(pg_stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "op.xml"
    path.write_bytes(native_xml("OP-1", 9000))
    pg_stack.cli("submit", str(path), "--internal-id", "OP-1")
    worker = pg_stack.worker().start()
    try:
        wait_until(lambda: pg_stack.states().get("OP-1") == "retrieved", timeout=60, what="retrieved")
        before = pg_stack.store.jobs.resolve("OP-1").xml_url
        links = json.loads(pg_stack.cli("links", "OP-1", "--json").stdout)
        assert links["xml"] and links["xml"] != before
        refused = pg_stack.cli("retry", "OP-1", check=False)
        assert refused.returncode != 0 and "only failed or expired" in refused.stderr
    finally:
        worker.stop()
    kinds = [e.kind for e in pg_stack.store.jobs.events(pg_stack.store.jobs.resolve("OP-1").id)]
    assert "links" in kinds


def test_batch_on_the_embedded_default(embedded_stack: Stack, tmp_path: Path) -> None:
    docs = write_batch(tmp_path / "embedded", 20, "EMB")
    worker = embedded_stack.worker(concurrency=4).start()
    try:
        embedded_stack.submit_batch(tmp_path / "embedded")
        wait_until(
            lambda: (
                len(embedded_stack.states()) == len(docs) and all(s in FINAL for s in embedded_stack.states().values())
            ),
            timeout=150,
            what="every invoice in a final state",
        )
    finally:
        worker.stop()
    tally = check_outcome(embedded_stack, docs, "EMB")
    assert tally["retrieved"] == 22 and tally["invalid"] == 1
