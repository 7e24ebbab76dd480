"""The whole pipeline against the hostile provider: CLI, a Celery worker, PostgreSQL, Redis.

Each hostile document must end with recorded error events and the right state (a malformed id:
`expired` at its deadline, never an id in the database; a refused link: still `issued`, asking for
new links), while the well-behaved documents beside them are retrieved and the archive holds
exactly their files, whole and private.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from models import Store, make_engine
from tests.harness import Worker, pipeline_env, wait_until
from tests.harness import run_cli as cli
from tests.hostile.server import Hostile
from worker.samples import native_xml

pytestmark = pytest.mark.e2e

MALFORMED = {"GUID:long", "GUID:traversal", "GUID:absolute"}
REFUSED_LINKS = {
    "LINK:foreign": "not one of the provider's hosts",
    "LINK:redirect-out": "not one of the provider's hosts",
    "LINK:oversize": "larger than the 262144-byte cap",
    "PDF:json": "neither XML, PDF nor ZIP",
    "PDF:xml-as-pdf": "the pdf link served application/xml",
}
GOOD = {"OK-1", "OK-2", "LINK:redirect-in"}
PARTIAL = {"PDF:json", "PDF:xml-as-pdf"}


@pytest.fixture
def store(migrated_pg_url: str) -> Iterator[Store]:
    engine = make_engine(migrated_pg_url)
    yield Store(engine)
    engine.dispose()


def test_hostile_answers_are_recorded_and_the_archive_stays_whole(
    hostile: tuple[Hostile, str], migrated_pg_url: str, redis_url: str, store: Store, tmp_path: Path
) -> None:
    state, base = hostile
    redis.Redis.from_url(redis_url).flushdb()
    env = pipeline_env(
        database_url=migrated_pg_url,
        broker_url=redis_url,
        sandbox_url=base,
        home=tmp_path,
        extra={"EINVOICE_DEADLINE_SECONDS": "25", "EINVOICE_LINK_MAX_ZIP_BYTES": str(256 << 10)},
    )
    folder = tmp_path / "in"
    folder.mkdir()
    for n, internal_id in enumerate(sorted(MALFORMED | set(REFUSED_LINKS) | GOOD)):
        (folder / f"{internal_id}.xml").write_bytes(native_xml(internal_id, 9000, folio=n + 1))
    hits = state.admin_hits
    cli(env, "submit", str(folder))
    worker = Worker(env, tmp_path / "w1.log").start()

    def settled() -> bool:
        jobs = {job.internal_id: job for job in store.jobs.list_jobs()}
        return (
            all(jobs[i].state == "retrieved" for i in GOOD)
            and all(jobs[i].state == "expired" for i in MALFORMED)
            and all(
                jobs[i].state == "issued" and sum(e.kind == "error" for e in store.jobs.events(jobs[i].id)) >= 2
                for i in REFUSED_LINKS
            )
        )

    try:
        wait_until(settled, timeout=120, what="every hostile document recorded, every good one retrieved")
    finally:
        worker.stop()
    jobs = {job.internal_id: job for job in store.jobs.list_jobs()}
    log = worker.log_text()
    assert "Traceback" not in log, log[-3000:]

    for internal_id in MALFORMED:
        job = jobs[internal_id]
        errors = [e for e in store.jobs.events(job.id) if e.kind == "error"]
        said = [(e.error_class, e.message) for e in errors]
        assert errors and all(e.error_class == "transient" and "DocumentGUID" in (e.message or "") for e in errors), (
            said
        )
        assert job.doc_guid is None and not store.jobs.artifacts(job.id)
        assert store.jobs.events(job.id)[-1].to_state == "expired"

    for internal_id, reason in REFUSED_LINKS.items():
        job = jobs[internal_id]
        errors = [e for e in store.jobs.events(job.id) if e.kind == "error"]
        said = [(e.error_class, e.message) for e in errors]
        assert all(e.error_class == "permanent" and reason in (e.message or "") for e in errors), said
        assert all("http" not in (e.message or "") for e in errors)  # links never reach events
        assert job.doc_guid is not None and {a.kind for a in store.jobs.artifacts(job.id)} <= {"xml"}
    assert state.admin_hits == hits  # no link ever reached the internal admin endpoint

    archived = {}
    for internal_id, job in jobs.items():
        for artifact in store.jobs.artifacts(job.id):
            path = Path(artifact.path)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact.sha256
            archived[path] = internal_id
    assert GOOD <= set(archived.values()) <= GOOD | PARTIAL
    # On disk: the recorded files, plus at most the XML a PDF-refused job fetched before its PDF
    # was refused (kept, named by its job, recorded once a retrieve completes); nothing of a
    # refused link or a malformed id, and no temporary file.
    owner = {job.id: internal_id for internal_id, job in jobs.items()}
    for path in (tmp_path / "archive").rglob("*"):
        if path.is_dir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
            continue
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not path.name.startswith("."), path
        internal_id = next(owner[job_id] for job_id in owner if job_id in path.name)
        assert path in archived or (internal_id in PARTIAL and ".xml." in path.name), path
