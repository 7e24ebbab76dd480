"""The whole pipeline with real parts: PostgreSQL, Redis, Celery workers, the sandbox over HTTP.

Invoices go in through the `einvoice` CLI, as an ERP integration would; workers are separate
processes; the test reads the database and the sandbox's counters to check the outcome.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from models import Store, make_engine
from models.states import is_valid_path
from sandbox.app import build_app
from sandbox.server import ServerThread
from tests.harness import FINAL, ROOT, Worker, pipeline_env, sandbox_admin, wait_until
from worker.samples import native_xml

pytestmark = pytest.mark.e2e


@dataclass
class Stack:
    env: dict[str, str]
    store: Store
    sandbox_url: str
    home: Path
    admin: Any

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"einvoice {' '.join(args)} failed: {result.stderr}")
        return result

    def worker(self, name: str = "w1", **kwargs: Any) -> Worker:
        return Worker(self.env, self.home / f"{name}.log", name=name, **kwargs)

    def states(self) -> dict[str, str]:
        return {job.internal_id: job.state for job in self.store.list_jobs()}


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with ServerThread(build_app()) as server:
        yield server.url


def _stack(database_url: str, broker_url: str | None, sandbox_url: str, home: Path, extra: dict[str, str]) -> Stack:
    admin = sandbox_admin(sandbox_url)
    admin("reset")
    admin("config", {"preset": "default"})
    admin("config", {"min_bytes": 4096, "processing_base_seconds": 0.2, "seconds_per_mb": 20.0, "seed": 11})
    env = pipeline_env(
        database_url=database_url, broker_url=broker_url, sandbox_url=sandbox_url, home=home, extra=extra
    )
    from worker.schema import upgrade

    upgrade(database_url)
    return Stack(env, Store(make_engine(database_url)), sandbox_url, home, admin)


@pytest.fixture
def pg_stack(migrated_pg_url: str, redis_url: str, sandbox_url: str, tmp_path: Path) -> Iterator[Stack]:
    redis.Redis.from_url(redis_url).flushdb()
    stack = _stack(migrated_pg_url, redis_url, sandbox_url, tmp_path, {})
    yield stack
    stack.store.engine.dispose()


@pytest.fixture
def embedded_stack(sandbox_url: str, tmp_path: Path) -> Iterator[Stack]:
    stack = _stack(f"sqlite:///{tmp_path / 'einvoice.db'}", None, sandbox_url, tmp_path, {})
    yield stack
    stack.store.engine.dispose()


def write_batch(folder: Path, count: int, prefix: str) -> dict[str, bytes]:
    """`count` async-sized invoices, 2 small ones (sync path) and 1 that is not XML."""
    folder.mkdir(parents=True, exist_ok=True)
    docs: dict[str, bytes] = {}
    for n in range(count):
        docs[f"{prefix}-{n:03d}"] = native_xml(f"{prefix}-{n:03d}", 6000 + 1500 * (n % 7), folio=n + 1)
    for n in range(2):
        docs[f"{prefix}-SMALL{n}"] = native_xml(f"{prefix}-SMALL{n}", 1000, folio=500 + n)
    docs[f"{prefix}-BAD"] = b"\x00\x01 this is not XML"
    for key, payload in docs.items():
        (folder / f"{key}.xml").write_bytes(payload)
    return docs


def check_outcome(stack: Stack, docs: dict[str, bytes], prefix: str) -> dict[str, int]:
    """Every job final and consistent with what the sandbox decided; every history a valid path."""
    counters = stack.admin("counters")
    jobs = {job.internal_id: job for job in stack.store.list_jobs()}
    assert set(jobs) == set(docs)
    tally: dict[str, int] = {}
    for internal_id, job in jobs.items():
        tally[job.state] = tally.get(job.state, 0) + 1
        events = stack.store.events(job.id)
        path = stack.store.transition_path(job.id)
        assert is_valid_path(path), (internal_id, path)
        assert [e.id for e in events] == sorted(e.id for e in events)
        if internal_id.endswith("BAD"):
            assert job.state == "invalid" and job.error_message
            continue
        if "SMALL" in internal_id:
            assert job.state == "retrieved"
            assert counters["sync"][internal_id]["documents"] == 1
            continue
        sandbox_doc = counters["async"][internal_id]
        assert sandbox_doc["documents"] == 1, internal_id
        expected = {2: "retrieved", 3: "failed"}[sandbox_doc["status"]]
        assert job.state == expected, (internal_id, job.state, sandbox_doc)
        if expected == "failed":
            assert job.error_message
        else:
            assert job.doc_guid and job.polls >= 1
            artifacts = {a.kind: a for a in stack.store.artifacts(job.id)}
            assert set(artifacts) == {"xml", "pdf"}
            for artifact in artifacts.values():
                assert hashlib.sha256(Path(artifact.path).read_bytes()).hexdigest() == artifact.sha256
                assert str(stack.home / "archive") in artifact.path
    for entry in counters["async"].values():
        assert entry["documents"] <= 1
    return tally


def test_batch_reaches_final_states_on_postgresql_and_redis(pg_stack: Stack, tmp_path: Path) -> None:
    pg_stack.admin("config", {"failure_rate": 0.1})
    docs = write_batch(tmp_path / "batch", 55, "PG")
    worker = pg_stack.worker(pool="prefork", concurrency=2).start()
    try:
        pg_stack.cli("submit", str(tmp_path / "batch"))
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
    assert len(pg_stack.store.list_jobs()) == 1


def test_links_are_refreshed_before_they_expire(pg_stack: Stack, tmp_path: Path) -> None:
    pg_stack.admin("config", {"link_ttl_seconds": 8})
    pg_stack.env.update({"MYSUITE_LINK_TTL_SECONDS": "8", "EINVOICE_LINKS_REFRESH_BEFORE_SECONDS": "5"})
    path = tmp_path / "links.xml"
    path.write_bytes(native_xml("LINKS-1", 9000))
    pg_stack.cli("submit", str(path), "--internal-id", "LINKS-1")
    worker = pg_stack.worker().start()
    try:
        wait_until(lambda: pg_stack.states().get("LINKS-1") == "retrieved", timeout=60, what="retrieved")
        job = pg_stack.store.resolve("LINKS-1")
        first_links, first_expiry = (job.xml_url, job.pdf_url), job.links_expires_at
        wait_until(
            lambda: any(e.kind == "links" for e in pg_stack.store.events(job.id)),
            timeout=30,
            what="a links refresh event",
        )
    finally:
        worker.stop()
    job = pg_stack.store.get(job.id)
    assert (job.xml_url, job.pdf_url) != first_links
    assert job.links_expires_at is not None and first_expiry is not None and job.links_expires_at > first_expiry
    refresh = next(e for e in pg_stack.store.events(job.id) if e.kind == "links")
    assert "http" not in (refresh.message or "")  # events never hold the links themselves


def test_lost_messages_are_recovered_by_the_sweep(pg_stack: Stack, redis_url: str, tmp_path: Path) -> None:
    docs = write_batch(tmp_path / "lost", 10, "LOST")
    pg_stack.cli("submit", str(tmp_path / "lost"))
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
        before = pg_stack.store.resolve("OP-1").xml_url
        links = json.loads(pg_stack.cli("links", "OP-1", "--json").stdout)
        assert links["xml"] and links["xml"] != before
        refused = pg_stack.cli("retry", "OP-1", check=False)
        assert refused.returncode != 0 and "only failed or expired" in refused.stderr
    finally:
        worker.stop()
    kinds = [e.kind for e in pg_stack.store.events(pg_stack.store.resolve("OP-1").id)]
    assert "links" in kinds


def test_batch_on_the_embedded_default(embedded_stack: Stack, tmp_path: Path) -> None:
    docs = write_batch(tmp_path / "embedded", 20, "EMB")
    worker = embedded_stack.worker(concurrency=4).start()
    try:
        embedded_stack.cli("submit", str(tmp_path / "embedded"))
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
