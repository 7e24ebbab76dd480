"""A stack of real parts for end-to-end tests: database, broker, sandbox, and the CLI as the ERP's entry."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import Store, make_engine
from models.states import is_valid_path
from tests.harness import FINAL, Worker, pipeline_env, run_cli, sandbox_admin, transition_path
from worker.samples import native_xml


@dataclass
class Stack:
    env: dict[str, str]
    store: Store
    sandbox_url: str
    home: Path
    admin: Any

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env, *args, check=check)

    def submit_batch(self, folder: Path) -> None:
        """Submit a `write_batch` folder: it holds one invalid document, so the CLI exits 3."""
        result = self.cli("submit", str(folder), check=False)
        assert result.returncode == 3, result.stderr[-2000:]

    def worker(self, name: str = "w1", **kwargs: Any) -> Worker:
        return Worker(self.env, self.home / f"{name}.log", name=name, **kwargs)

    def all_final(self, count: int) -> bool:
        jobs = self.store.jobs.list_jobs()
        return len(jobs) == count and all(job.state in FINAL for job in jobs)

    def states(self) -> dict[str, str]:
        return {job.internal_id: job.state for job in self.store.jobs.list_jobs()}


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
    jobs = {job.internal_id: job for job in stack.store.jobs.list_jobs()}
    assert set(jobs) == set(docs)
    tally: dict[str, int] = {}
    for internal_id, job in jobs.items():
        tally[job.state] = tally.get(job.state, 0) + 1
        events = stack.store.jobs.events(job.id)
        path = transition_path(stack.store, job.id)
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
            artifacts = {a.kind: a for a in stack.store.jobs.artifacts(job.id)}
            assert set(artifacts) == {"xml", "pdf"}
            for artifact in artifacts.values():
                assert hashlib.sha256(Path(artifact.path).read_bytes()).hexdigest() == artifact.sha256
                assert str(stack.home / "archive") in artifact.path
    for entry in counters["async"].values():
        assert entry["documents"] <= 1
    return tally


def make_stack(database_url: str, broker_url: str | None, sandbox_url: str, home: Path, extra: dict[str, str]) -> Stack:
    admin = sandbox_admin(sandbox_url)
    admin("reset")
    admin("config", {"preset": "default"})
    admin("config", {"min_bytes": 4096, "processing_base_seconds": 0.2, "seconds_per_mb": 20.0, "seed": 11})
    sandbox_admin(sandbox_url, "mseller")("reset")
    env = pipeline_env(
        database_url=database_url, broker_url=broker_url, sandbox_url=sandbox_url, home=home, extra=extra
    )
    from worker.schema import upgrade

    upgrade(database_url)
    return Stack(env, Store(make_engine(database_url)), sandbox_url, home, admin)
