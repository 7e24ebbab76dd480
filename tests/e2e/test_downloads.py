"""A year of received CFDI through the real pipeline: registered with the CLI, split by SAT's 5003,
polled, downloaded and indexed by Celery workers on PostgreSQL and Redis, against the MYSuite
sandbox over HTTP, with a worker killed while packages are being downloaded.

SAT counts a download when it hands out a package's link, so "downloaded once" is read from the
sandbox's link counter; a transfer cut by the kill may be fetched again from its kept link.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from models.cfdi import Cfdi, DownloadPackage
from tasks.downloads import KIND
from tests.e2e.stack import Stack
from tests.harness import wait_until

pytestmark = pytest.mark.e2e

RFC = "JES900109Q90"
ACTIVE = {"registered", "ready", "downloaded"}


def download_jobs(stack: Stack) -> dict[str, str]:
    return {job.id: job.state for job in stack.store.jobs.list_jobs(kind=KIND)}


def package_rows(stack: Stack) -> list[Any]:
    with stack.store.engine.connect() as conn:
        return list(
            conn.execute(sa.select(DownloadPackage.package_id, DownloadPackage.state, DownloadPackage.cfdi_count))
        )


def mid_transfer(stack: Stack) -> bool:
    """A package whose link SAT has handed out (and we kept) and whose copy has not arrived."""
    with stack.store.engine.connect() as conn:
        found = conn.scalar(
            sa.select(sa.func.count())
            .select_from(DownloadPackage)
            .where(DownloadPackage.link.is_not(None), DownloadPackage.state == "listed")
        )
    return bool(found)


def settled(stack: Stack) -> bool:
    jobs = download_jobs(stack)
    return len(jobs) >= 3 and not ACTIVE & set(jobs.values())


def test_a_year_split_downloaded_once_and_indexed_through_a_killed_worker(
    pg_stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_stack.admin(
        "config",
        {
            "dm_timeline": "1,2,3",
            "dm_step_seconds": 0.5,
            "dm_cfdi_per_day": 2,
            "dm_max_cfdi": 500,
            "dm_package_size": 40,
            "latency_ms": 150,
            "faults_on_files": True,
        },
    )
    cer, key = tmp_path / "fiel.cer", tmp_path / "fiel.key"
    cer.write_bytes(b"-----FIEL CERTIFICATE-----" * 8)
    key.write_bytes(b"-----FIEL PRIVATE KEY-----" * 8)
    fiel = {
        "MYSUITE_FIEL_CER_FILE": str(cer),
        "MYSUITE_FIEL_KEY_FILE": str(key),
        "MYSUITE_FIEL_PASSWORD": "fiel-password",
        "EINVOICE_DOWNLOAD_POLL_SECONDS": "0.5,1",
    }
    pg_stack.env.update(fiel)
    backwards = pg_stack.cli(
        "downloads",
        "request",
        "--rfc",
        RFC,
        "--from",
        "2025-02-01 00:00:00",
        "--to",
        "2025-01-01 00:00:00",
        "--direction",
        "received",
        "--kind",
        "cfdi",
        check=False,
    )
    assert backwards.returncode == 2 and "period_order" in backwards.stderr

    done = pg_stack.cli(
        "downloads",
        "request",
        "--rfc",
        RFC,
        "--from",
        "2025-01-01 00:00:00",
        "--to",
        "2025-12-31 23:59:59",
        "--direction",
        "received",
        "--kind",
        "cfdi",
        "--json",
    )
    registered = json.loads(done.stdout)
    states = [row["state"] for row in registered["requests"]]
    assert states == ["split", "registered", "registered"] and registered["refused"] == []
    assert pg_stack.admin("counters")["descarga"]["registrations"] == {"5003": 1, "5000": 2}
    parent = registered["requests"][0]
    assert {row["parent_id"] for row in registered["requests"][1:]} == {parent["id"]}

    # One task at a time until the kill, so that it lands in a transfer and not in another job's
    # OBTENER_LINK: a download counted with no link kept is deliberately left to an operator.
    worker = pg_stack.worker(pool="threads", concurrency=1).start()
    try:
        wait_until(lambda: mid_transfer(pg_stack), timeout=90, interval=0.02, what="a package in transfer")
        worker.kill()
        assert ACTIVE & set(download_jobs(pg_stack).values())
        worker = pg_stack.worker(name="w2", pool="threads", concurrency=4).start()
        wait_until(lambda: settled(pg_stack), timeout=120, what="every request indexed")
    finally:
        worker.stop()

    jobs = download_jobs(pg_stack)
    assert sorted(jobs.values()) == ["indexed", "indexed", "split"], [
        (job.state, job.error_message) for job in pg_stack.store.jobs.list_jobs(kind=KIND)
    ]
    counters = pg_stack.admin("counters")["descarga"]
    sandbox_packages = counters["packages"]
    rows = package_rows(pg_stack)
    assert len(rows) == len(sandbox_packages) >= 2 * 5
    assert {row.state for row in rows} == {"indexed"}
    assert {entry["links"] for entry in sandbox_packages.values()} == {1}, sandbox_packages
    assert all(entry["downloads"] >= 1 and entry["refused"] == 0 for entry in sandbox_packages.values())
    expected = sum(entry["cfdi"] for entry in counters["requests"].values() if entry["state"] == 3)
    with pg_stack.store.engine.connect() as conn:
        indexed = conn.scalar(sa.select(sa.func.count()).select_from(Cfdi))
    assert indexed == expected == sum(row.cfdi_count for row in rows) > 700

    status = json.loads(pg_stack.cli("downloads", "status", registered["requests"][1]["id"], "--json").stdout)
    assert status["state"] == "indexed" and status["rfc"] == RFC and status["direction"] == "received"
    assert status["period"]["from"] == "2025-01-01 00:00:00" and status["sat_state"] == 3
    assert status["packages"] and all(len(p["sha256"]) == 64 for p in status["packages"])
    listed = json.loads(pg_stack.cli("downloads", "list", "--state", "indexed", "--json").stdout)
    assert len(listed) == 2
    cfdi = json.loads(pg_stack.cli("cfdi", "list", "--direction", "received", "--limit", "5000", "--json").stdout)
    assert len(cfdi) == indexed and {row["receiver_rfc"] for row in cfdi} == {RFC}
    assert not [line for line in pg_stack.home.glob("*.log") if "fiel-password" in line.read_text(errors="replace")]
