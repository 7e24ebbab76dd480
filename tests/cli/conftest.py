"""`einvoice` as an ERP or an operator runs it: a subprocess on an embedded SQLite store of the test's own.

The test reads and prepares jobs through the same store, in process; nothing of ours is replaced.
Jobs are published to the embedded filesystem broker, which no worker reads here: these tests are
about what the command line accepts, refuses and prints.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from models import Job, Store, make_engine
from tests.harness import pipeline_env, run_cli
from worker.samples import native_xml

NOT_XML = b"\x00\x01 this is not XML"


@dataclass
class Cli:
    env: dict[str, str]
    store: Store
    folder: Path

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = run_cli(self.env, *args, check=False)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def file(self, name: str, content: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(content)
        return path

    def job(self, internal_id: str) -> Job:
        (job,) = [job for job in self.store.jobs.list_jobs() if job.internal_id == internal_id]
        return job


def invoice(internal_id: str, folio: int = 1) -> bytes:
    """A valid MYSuite document; another folio makes another document under the same internal id."""
    return native_xml(internal_id, 2000, folio=folio)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    from worker.schema import upgrade

    url = f"sqlite:///{tmp_path / 'einvoice.db'}"
    upgrade(url)
    # No provider is called by these commands; the port is a closed one so a call would fail loudly.
    env = pipeline_env(database_url=url, broker_url=None, sandbox_url="http://127.0.0.1:9", home=tmp_path)
    engine = make_engine(url)
    folder = tmp_path / "documents"
    folder.mkdir()
    yield Cli(env, Store(engine), folder)
    engine.dispose()
