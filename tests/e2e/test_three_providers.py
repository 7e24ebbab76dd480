"""MYSuite, Hacienda and MSeller documents in one run: real workers, PostgreSQL, Redis and the sandbox."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models import make_engine
from models.usage import DatabaseUsage
from providers.hacienda.samples import sample_comprobante
from providers.mseller.budget import month_of
from providers.mseller.samples import encf, sample_ecf, sample_ecf_document
from tests.e2e.stack import Stack
from tests.e2e.test_mixed_providers import HACIENDA_LOGIN
from tests.harness import FINAL, sandbox_admin, wait_until
from tests.ops.procs import metrics_service, scrape
from worker.samples import native_xml

pytestmark = pytest.mark.e2e

MSELLER_DOCS = 24
SCRIPTED = {encf(1): "conditional", encf(2): "rejected", encf(3): "error"}


def test_three_providers_in_one_run_each_document_sent_once(pg_stack: Stack, tmp_path: Path) -> None:
    hacienda = sandbox_admin(pg_stack.sandbox_url, "hacienda")
    hacienda("reset")
    hacienda("config", {"processing_seconds": 0.5, "quota_per_hour": 0, "quota_per_day": 0, "seed": 5})
    mseller = sandbox_admin(pg_stack.sandbox_url, "mseller")
    mseller("config", {"plan": "gratis", "processing_seconds": 1.5, "outcomes": SCRIPTED, "seed": 3})
    pg_stack.env.update(HACIENDA_LOGIN)
    folders = {name: tmp_path / name for name in ("mx", "cr", "do")}
    for folder in folders.values():
        folder.mkdir()
    for n in range(8):
        (folders["mx"] / f"MX-{n:03d}.xml").write_bytes(native_xml(f"MX-{n:03d}", 7000, folio=n + 1))
        (folders["cr"] / f"CR-{n:03d}.xml").write_bytes(sample_comprobante(n + 1))
    for n in range(1, MSELLER_DOCS + 1):
        (folders["do"] / f"DO-{n:03d}.json").write_bytes(sample_ecf(n))
    unbalanced = sample_ecf_document(900)
    unbalanced["ECF"]["Encabezado"]["Totales"]["MontoTotal"] = "1.00"
    (folders["do"] / "DO-BADTOTAL.json").write_text(json.dumps(unbalanced))
    worker = pg_stack.worker(pool="threads", concurrency=8).start()
    try:
        pg_stack.cli("submit", str(folders["mx"]))
        pg_stack.cli("submit", str(folders["cr"]), "--provider", "hacienda")
        submitted = pg_stack.cli(
            "submit", str(folders["do"]), "--provider", "mseller", "--pattern", "*.json", check=False
        )
        assert submitted.returncode == 3, submitted.stderr  # one invalid document, the rest accepted
        total = 8 + 8 + MSELLER_DOCS + 1
        wait_until(
            lambda: len(pg_stack.states()) == total and all(s in FINAL for s in pg_stack.states().values()),
            timeout=150,
            what="every provider's documents in final states",
        )
    finally:
        worker.stop()

    jobs = {job.internal_id: job for job in pg_stack.store.jobs.list_jobs()}
    assert {jobs[f"MX-{n:03d}"].state for n in range(8)} <= {"retrieved", "failed"}
    assert {jobs[f"CR-{n:03d}"].state for n in range(8)} <= {"retrieved", "failed"}
    mysuite_counts = pg_stack.admin("counters")["async"]
    assert all(mysuite_counts[f"MX-{n:03d}"]["documents"] == 1 for n in range(8))
    claves = hacienda("counters")["claves"]
    assert all(claves[jobs[f"CR-{n:03d}"].provider_request_id]["created"] == 1 for n in range(8))

    bad = jobs["DO-BADTOTAL"]
    assert bad.state == "invalid" and "MontoTotal" in (bad.error_message or "")
    counters = mseller("counters")
    expected = {"conditional": "retrieved", "accepted": "retrieved", "rejected": "failed", "error": "failed"}
    for n in range(1, MSELLER_DOCS + 1):
        job, number = jobs[f"DO-{n:03d}"], encf(n)
        assert job.provider == "mseller" and job.provider_request_id == number
        assert job.state == expected[SCRIPTED.get(number, "accepted")], (number, job.state, job.error_message)
        assert counters["ecfs"][number]["posts"] == 1 and counters["ecfs"][number]["created"] == 1
        if job.state == "retrieved":
            (record,) = pg_stack.store.jobs.artifacts(job.id)
            assert record.kind == "json"
            assert hashlib.sha256(Path(record.path).read_bytes()).hexdigest() == record.sha256
    assert "2" in (jobs["DO-002"].error_message or "") and jobs["DO-003"].error_message
    conditional = [e.message or "" for e in pg_stack.store.jobs.events(jobs["DO-001"].id) if e.to_state == "issued"]
    assert conditional and "observations" in conditional[0]

    totals = counters["totals"]
    assert totals.get("status_429_throttled", 0) == 0 and totals.get("status_429_monthly", 0) == 0
    assert totals.get("status_single", 0) == 0, "statuses go through the batch endpoint"
    assert totals["batch_ecfs"] > totals["status_batch"], "batch calls carry several e-NCF"
    assert totals["sends"] == MSELLER_DOCS

    status = json.loads(pg_stack.cli("status", "DO-004", "--json").stdout)
    document = status["document"]
    assert document["fiscal_id"] == encf(4)
    assert document["security_code"] and document["qr_url"].startswith("https://")
    text = pg_stack.cli("status", "DO-004").stdout
    assert f"document: {encf(4)} security code {document['security_code']}" in text

    # Every process counted in the one monthly figure, and `einvoice metrics` exports it.
    engine = make_engine(pg_stack.env["DATABASE_URL"])
    used = DatabaseUsage(engine).used("mseller", month_of(datetime.now(UTC)))
    engine.dispose()
    assert used == totals["counted"]
    service = metrics_service(pg_stack.env, tmp_path / "metrics.log").start("/healthz")
    try:
        samples = scrape(service.url)
    finally:
        service.stop()
    key = (("provider", "mseller"),)
    assert samples[("einvoice_provider_requests_month", key)] == used
    assert samples[("einvoice_provider_plan_share", key)] == pytest.approx(used / 1000)
