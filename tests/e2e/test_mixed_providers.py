"""MYSuite and Hacienda invoices in one batch, through the same tasks, workers and sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers.hacienda.samples import sample_comprobante
from tests.e2e.stack import Stack
from tests.harness import FINAL, sandbox_admin, wait_until
from worker.samples import native_xml

pytestmark = pytest.mark.e2e

HACIENDA_LOGIN = {
    "HACIENDA_USERNAME": "cpj-3-101-123456@stag.comprobanteselectronicos.go.cr",
    "HACIENDA_PASSWORD": "sandbox",
    "HACIENDA_RATE_PER_HOUR": "0",
    "HACIENDA_RATE_PER_DAY": "0",
}


def test_mysuite_and_hacienda_in_one_batch(pg_stack: Stack, tmp_path: Path) -> None:
    hacienda = sandbox_admin(pg_stack.sandbox_url, "hacienda")
    hacienda("reset")
    hacienda(
        "config", {"processing_seconds": 0.5, "quota_per_hour": 0, "quota_per_day": 0, "reject_share": 0.2, "seed": 5}
    )
    pg_stack.env.update(HACIENDA_LOGIN)
    mysuite_dir, hacienda_dir = tmp_path / "mx", tmp_path / "cr"
    mysuite_dir.mkdir()
    hacienda_dir.mkdir()
    for n in range(15):
        (mysuite_dir / f"MX-{n:03d}.xml").write_bytes(native_xml(f"MX-{n:03d}", 7000, folio=n + 1))
        (hacienda_dir / f"CR-{n:03d}.xml").write_bytes(sample_comprobante(n + 1))
    (hacienda_dir / "CR-BADCLAVE.xml").write_bytes(sample_comprobante(99, clave="5060105240003101123456" + "9" * 28))
    worker = pg_stack.worker(pool="threads", concurrency=8).start()
    try:
        pg_stack.cli("submit", str(mysuite_dir))
        refused = pg_stack.cli("submit", str(hacienda_dir), "--provider", "hacienda", check=False)
        assert refused.returncode == 3, "the folder holds one invalid comprobante (bad clave)"
        wait_until(
            lambda: len(pg_stack.states()) == 31 and all(s in FINAL for s in pg_stack.states().values()),
            timeout=120,
            what="both providers' invoices in final states",
        )
    finally:
        worker.stop()
    jobs = {job.internal_id: job for job in pg_stack.store.jobs.list_jobs()}
    assert {jobs[f"MX-{n:03d}"].provider for n in range(15)} == {"mysuite"}
    assert jobs["CR-BADCLAVE"].state == "invalid" and "clave" in (jobs["CR-BADCLAVE"].error_message or "").lower()
    counters = hacienda("counters")["claves"]
    cr_states: dict[str, int] = {}
    for n in range(15):
        job = jobs[f"CR-{n:03d}"]
        cr_states[job.state] = cr_states.get(job.state, 0) + 1
        assert job.provider == "hacienda" and job.provider_request_id
        assert counters[job.provider_request_id]["created"] == 1
        assert job.state in ("retrieved", "failed")
        if job.state == "retrieved":
            assert "respuesta" in {a.kind for a in pg_stack.store.jobs.artifacts(job.id)}
        else:
            assert job.error_message
    assert cr_states.get("retrieved", 0) >= 8
    tokens = hacienda("counters")["tokens"]
    assert tokens["logins"] <= 8  # one per worker thread at most, never one per document
    listed = json.loads(pg_stack.cli("list", "--provider", "hacienda", "--json").stdout)
    assert len(listed) == 16
