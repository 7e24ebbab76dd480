"""Bad input from an ERP, through the producer API and through the CLI: a clear error and an
`invalid` job or a refusal every time; never a crash, a hung worker, or an entity resolved."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import Store, make_engine
from sandbox.app import build_app
from sandbox.server import ServerThread
from tests.harness import FINAL, ROOT, Worker, pipeline_env, sandbox_admin, transition_path, wait_until
from tests.inputs.corpus import DOCUMENTS, GOOD, IDS, PASSWD_MARK, Case
from worker.producer import InvalidInput, enqueue


@pytest.fixture
def store(migrated_pg_url: str) -> Iterator[Store]:
    engine = make_engine(migrated_pg_url)
    yield Store(engine)
    engine.dispose()


def _everything_said(store: Store) -> str:
    """Every text the service kept about its jobs: errors, events, payloads."""
    parts = []
    for job in store.jobs.list_jobs():
        parts += [job.error_message or "", job.internal_id]
        parts += [e.message or "" for e in store.jobs.events(job.id)]
        if job.state != "invalid":
            parts.append(store.jobs.payload(job.id).decode("utf-8", "replace"))
    return "\n".join(parts)


@pytest.mark.parametrize("case", DOCUMENTS + IDS, ids=lambda c: c.name)
def test_producer_api(store: Store, case: Case) -> None:
    if case.outcome == "refused":
        with pytest.raises(InvalidInput, match=f"(?i){case.reason}"):
            enqueue(store, case.payload, case.internal_id, publish=False)
        assert store.jobs.list_jobs() == []
        return
    outcome = enqueue(store, case.payload, case.internal_id, publish=False)
    job = outcome.job
    if case.outcome == "invalid":
        assert job.state == "invalid"
        assert job.error_message and case.reason in job.error_message.lower(), job.error_message
        assert transition_path(store, job.id) == [(None, "invalid")]
    else:
        assert job.state == "queued"
    assert PASSWD_MARK not in _everything_said(store)


def test_the_same_bad_document_twice_is_one_invalid_job(store: Store) -> None:
    first = enqueue(store, b"not xml", "TWICE-BAD", publish=False)
    second = enqueue(store, b"not xml", "TWICE-BAD", publish=False)
    assert first.created and not second.created and first.job.id == second.job.id


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.binary(max_size=300)
    | st.builds(
        lambda cut, junk: GOOD[:cut] + junk + GOOD[cut:],
        st.integers(min_value=0, max_value=len(GOOD)),
        st.sampled_from(
            [b"<!DOCTYPE x>", b"&xxe;", b"<!ENTITY a 'b'>", b"\x00", b"]]>", b"<![CDATA[", b"\xff\xfe", b"<", b"&#0;"]
        )
        | st.binary(max_size=8),
    ),
    internal_id=st.text(max_size=60),
)
def test_producer_never_crashes(store: Store, payload: bytes, internal_id: str) -> None:
    try:
        outcome = enqueue(store, payload, internal_id, publish=False)
    except InvalidInput as exc:
        assert str(exc)
        return
    job = outcome.job
    assert job.state in ("queued", "invalid")
    if job.state == "invalid":
        assert job.error_message
        assert job.internal_id == internal_id


@pytest.fixture
def pipeline(migrated_pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], Store, str]]:
    redis.Redis.from_url(redis_url).flushdb()
    with ServerThread(build_app()) as server:
        admin = sandbox_admin(server.url)
        admin("reset")
        admin("config", {"min_bytes": 4096, "processing_base_seconds": 0.2, "seconds_per_mb": 10.0})
        env = pipeline_env(database_url=migrated_pg_url, broker_url=redis_url, sandbox_url=server.url, home=tmp_path)
        engine = make_engine(migrated_pg_url)
        yield env, Store(engine), server.url
        engine.dispose()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_and_worker(pipeline: tuple[dict[str, str], Store, str], tmp_path: Path) -> None:
    """The corpus through `einvoice submit`, then a worker: bad ones never leave, nothing hangs."""
    env, store, _ = pipeline
    folder = tmp_path / "corpus"
    folder.mkdir()
    for case in DOCUMENTS:
        (folder / f"{case.internal_id}.xml").write_bytes(case.payload)
    (folder / "C-GOOD.xml").write_bytes(GOOD.replace(b"CORPUS-GOOD", b"C-GOOD"))
    result = _cli(env, "submit", str(folder), "--json")
    # Every file is processed; the status then reports the worst outcome: a refused document.
    assert result.returncode == 2, result.stderr
    invalid_count = sum(case.outcome == "invalid" for case in DOCUMENTS)
    refused_count = sum(case.outcome == "refused" for case in DOCUMENTS)
    assert f", {invalid_count} invalid, {refused_count} refused" in result.stderr
    assert "Traceback" not in result.stderr
    answers = {item["internal_id"]: item for item in json.loads(result.stdout)}
    for case in DOCUMENTS:
        answer = answers[case.internal_id]
        if case.outcome == "refused":
            assert case.reason in answer["refused"].lower()
        elif case.outcome == "invalid":
            assert answer["state"] == "invalid" and case.reason in answer["error"]["message"].lower()
        else:
            assert answer["state"] == "queued"
    for case in IDS:
        if "\x00" in case.internal_id or "\ud800" in case.internal_id:
            continue  # cannot travel in argv; covered through the producer API
        refused = _cli(env, "submit", str(folder / "C-GOOD.xml"), "--internal-id", case.internal_id)
        assert refused.returncode == 2, (case.name, refused.stdout, refused.stderr)
        assert "refused" in refused.stdout and "Traceback" not in refused.stderr

    worker = Worker(env, tmp_path / "worker.log", concurrency=2).start()
    try:
        wait_until(
            lambda: all(job.state in FINAL for job in store.jobs.list_jobs()), timeout=60, what="every job final"
        )
        assert worker.alive()
    finally:
        worker.stop()
    states = {job.internal_id: job.state for job in store.jobs.list_jobs()}
    assert states.pop("C-GOOD") == "retrieved"
    expected = {case.internal_id: case.outcome for case in DOCUMENTS if case.outcome != "refused"}
    assert states == expected
    assert PASSWD_MARK not in _everything_said(store)
    assert PASSWD_MARK not in worker.log_text()
