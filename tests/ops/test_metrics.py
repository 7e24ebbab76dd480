"""Metrics across processes, the database gauges and the endpoint's basic auth.

Writers are real separate processes (as under Celery's prefork pool); the test process only reads,
so prometheus_client's process-wide mode is never switched on here.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from models import Job, JobState, Store, make_engine, utcnow
from sandbox.server import ServerThread
from tests.harness import ROOT
from worker.metrics import BasicAuth, DatabaseCollector, ProcessFilesCollector, build_app, node_dir_name

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def run(code: str, env: dict[str, str]) -> None:
    """Run `code` in a fresh interpreter with only `env` added, as one more process of the service."""
    import os

    full = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "EINVOICE_HOME")}
    full.update(env, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=full, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def collect(*collectors: Any) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    samples: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def up(samples: Samples, provider: str = "mysuite") -> float | None:
    return samples.get(("einvoice_provider_up", (("provider", provider),)))


REQUEST = "from worker import metrics; metrics.observe_request('mysuite', 'verify', {outcome!r}, 0.05)"


def test_provider_up_follows_the_latest_request_of_any_process(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    files = ProcessFilesCollector(tmp_path)
    run(REQUEST.format(outcome="ok"), env)
    assert up(collect(files)) == 1
    # Another process now sees an outage: the earlier success of the first one must not hide it.
    run(REQUEST.format(outcome="transient"), env)
    assert up(collect(files)) == 0
    run(REQUEST.format(outcome="permanent"), env)  # a rejected document: the provider answered
    assert up(collect(files)) == 1
    run(REQUEST.format(outcome="auth"), env)
    assert up(collect(files)) == 0
    samples = collect(files)
    key = ("einvoice_provider_requests_total", (("operation", "verify"), ("outcome", "ok"), ("provider", "mysuite")))
    assert samples[key] == 1
    assert (
        samples[
            ("einvoice_provider_request_duration_seconds_count", (("operation", "verify"), ("provider", "mysuite")))
        ]
        == 4
    )


def test_a_process_that_imported_prometheus_first_still_writes_files(tmp_path: Path) -> None:
    """The `celery` command imports prometheus_client (through Flower's plugin) before our app."""
    run(
        """
        import prometheus_client
        from worker import metrics
        metrics.observe_request('hacienda', 'submit', 'ok', 0.2)
        """,
        {"EINVOICE_HOME": str(tmp_path)},
    )
    # A client's files join the archive when it exits, so one-off commands do not pile up files.
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.db"))
    assert written == [
        "metrics/clients/counter_archive.db",
        "metrics/clients/gauge_mostrecent_archive.db",
        "metrics/clients/histogram_archive.db",
    ]
    samples = collect(ProcessFilesCollector(tmp_path / "metrics"))
    assert up(samples, "hacienda") == 1
    key = ("einvoice_provider_requests_total", (("operation", "submit"), ("outcome", "ok"), ("provider", "hacienda")))
    assert samples[key] == 1


def test_a_restarting_worker_node_folds_its_files_without_losing_counts(tmp_path: Path) -> None:
    """A drop in a summed counter would read as a reset to Prometheus: restarts must keep the sums."""
    node = """
        from worker import metrics
        metrics.start_worker_node({node!r})
        metrics.observe_request('mysuite', 'submit', {outcome!r}, 0.1)
        """
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    submit_dir = tmp_path / node_dir_name("submit@host-a")
    run(node.format(node="submit@host-a", outcome="ok"), env)
    run(node.format(node="poll@host-a", outcome="ok"), env)
    run(node.format(node="submit@host-a", outcome="ok"), env)  # the submit node restarts...
    run(node.format(node="submit@host-a", outcome="transient"), env)  # ...twice
    (tmp_path / "counter_1.db").write_bytes(b"not ours")  # a stranger's file in the root is ignored
    samples = collect(ProcessFilesCollector(tmp_path))
    key = ("einvoice_provider_requests_total", (("operation", "submit"), ("outcome", "ok"), ("provider", "mysuite")))
    assert samples[key] == 3
    duration = (("operation", "submit"), ("provider", "mysuite"))
    assert samples[("einvoice_provider_request_duration_seconds_count", duration)] == 4
    assert samples[("einvoice_provider_request_duration_seconds_bucket", (("le", "0.1"), *duration))] == 4
    assert samples[("einvoice_provider_request_duration_seconds_bucket", (("le", "0.05"), *duration))] == 0
    # Earlier runs are folded into one archive per type; only the last run's own files remain.
    names = sorted(p.name.split("_")[-1] for p in submit_dir.glob("*.db"))
    assert names.count("archive.db") == 3 and len(names) == 6  # one archive and one live file per type
    assert up(samples) == 0  # the latest observation wins, wherever it is stored
    assert {p.name for p in tmp_path.iterdir() if p.is_dir()} == {submit_dir.name, node_dir_name("poll@host-a")}
    assert node_dir_name("poll@host-a") == "worker-poll_host-a"


def test_transitions_are_counted_by_every_process_that_makes_them(tmp_path: Path) -> None:
    """Creation in one process (the producer), the next steps in another (a worker child)."""
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    from worker.schema import upgrade

    upgrade(db)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m"), "DATABASE_URL": db, "EINVOICE_HOME": str(tmp_path)}
    run(
        """
        from datetime import timedelta
        import worker.app
        from tasks.context import services
        for n in range(3):
            services().store.jobs.create_job(provider='mysuite', entity='E', internal_id=f'T{n}', payload=b'<x/>', actor='test',
                               deadline=timedelta(hours=1), dispatch_grace=timedelta(seconds=30))
        """,
        env,
    )
    run(
        """
        import worker.app
        from models import JobState
        from tasks.context import services
        st = services().store
        for n, job in enumerate(st.jobs.list_jobs()):
            st.steps.transition(job.id, JobState.QUEUED, JobState.SUBMITTED, actor='test')
            st.steps.transition(job.id, JobState.SUBMITTED, JobState.ISSUED if n else JobState.FAILED, actor='test',
                          fields={'polls': n + 2})
        """,
        env,
    )
    samples = collect(ProcessFilesCollector(tmp_path / "m"))

    def count(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted({"provider": "mysuite", **labels}.items()))))

    assert count("einvoice_transitions_total", from_state="none", to_state="queued") == 3
    assert count("einvoice_transitions_total", from_state="queued", to_state="submitted") == 3
    assert count("einvoice_transitions_total", from_state="submitted", to_state="issued") == 2
    assert count("einvoice_transitions_total", from_state="submitted", to_state="failed") == 1
    assert count("einvoice_polls_per_document_count") == 3
    assert count("einvoice_polls_per_document_sum") == 2 + 3 + 4
    assert count("einvoice_polls_per_document_bucket", le="3.0") == 2
    assert count("einvoice_time_to_issue_seconds_count") == 2


def _job(store: Store, internal_id: str, **values: Any) -> str:
    job, _ = store.jobs.create_job(
        provider=values.pop("provider", "mysuite"),
        entity="E",
        internal_id=internal_id,
        payload=b"<x/>",
        actor="test",
        deadline=timedelta(hours=1),
        dispatch_grace=timedelta(seconds=30),
    )
    if values:
        with store.db.session() as session:
            session.execute(sa.update(Job).where(Job.id == job.id).values(**values))
    return job.id


def test_database_gauges_are_read_at_scrape_time(store: Store) -> None:
    now = utcnow()
    _job(store, "Q-OLD", state_changed_at=now - timedelta(seconds=600), next_attempt_at=now - timedelta(seconds=90))
    _job(store, "Q-NEW")
    _job(store, "S-1", state="submitted", next_attempt_at=now + timedelta(seconds=60))
    _job(store, "R-SOON", state="retrieved", links_expires_at=now + timedelta(hours=2), next_attempt_at=now)
    _job(store, "R-OUT", state="retrieved", links_expires_at=now - timedelta(days=9), next_attempt_at=None)
    _job(store, "H-1", provider="hacienda", state="failed", next_attempt_at=None)
    collector = DatabaseCollector(store, ["hacienda", "mysuite"])
    samples = collect(collector)

    def gauge(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    assert gauge("einvoice_jobs", provider="mysuite", state="queued") == 2
    assert gauge("einvoice_jobs", provider="mysuite", state="retrieved") == 2
    assert gauge("einvoice_jobs", provider="mysuite", state="expired") == 0
    assert gauge("einvoice_jobs", provider="hacienda", state="failed") == 1
    assert 89 <= (gauge("einvoice_oldest_due_seconds", provider="mysuite") or 0) < 120
    assert gauge("einvoice_oldest_due_seconds", provider="hacienda") == 0
    assert 599 <= (gauge("einvoice_oldest_queued_seconds", provider="mysuite") or 0) < 640
    assert gauge("einvoice_oldest_queued_seconds", provider="hacienda") == 0
    # Only links still meant to be refreshed count; the old document is served from the archive.
    assert 7000 < (gauge("einvoice_links_expiry_seconds", provider="mysuite") or 0) <= 7200
    assert gauge("einvoice_links_expiry_seconds", provider="hacienda") is None

    # Nothing is cached: the next scrape sees the database as it is now.
    with store.db.session() as session:
        session.execute(sa.update(Job).values(state=JobState.RETRIEVED.value, next_attempt_at=None))
    samples = collect(collector)
    assert gauge("einvoice_jobs", provider="mysuite", state="queued") == 0
    assert gauge("einvoice_jobs", provider="mysuite", state="retrieved") == 5


def test_an_unreachable_database_leaves_the_process_metrics_served(tmp_path: Path) -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:1/none", pool_pre_ping=False)
    (tmp_path / "worker-x").mkdir()
    samples = collect(DatabaseCollector(Store(engine), ["mysuite"]), ProcessFilesCollector(tmp_path))
    assert not any(name.startswith("einvoice_jobs") for name, _ in samples)
    engine.dispose()


def test_basic_auth_settings(tmp_path: Path) -> None:
    assert BasicAuth.from_env({}) is None
    auth = BasicAuth.from_env({"METRICS_BASIC_AUTH": "prom:pa:ss"})
    assert auth == BasicAuth("prom", "pa:ss") and "pa:ss" not in repr(auth)
    secret = tmp_path / "auth"
    secret.write_text("filed:secret\n")
    assert BasicAuth.from_env({"METRICS_BASIC_AUTH_FILE": str(secret), "METRICS_BASIC_AUTH": "a:b"}) == BasicAuth(
        "filed", "secret"
    )
    with pytest.raises(ValueError, match="user:password"):
        BasicAuth.from_env({"METRICS_BASIC_AUTH": "nopassword"})


@pytest.mark.parametrize("protected", [True, False])
def test_endpoint_requires_the_configured_credentials(tmp_path: Path, protected: bool) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProcessFilesCollector(tmp_path))
    auth = BasicAuth("prom", "secret") if protected else None
    with ServerThread(build_app(registry, auth)) as server:
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        anonymous = httpx.get(f"{server.url}/metrics", timeout=5)
        assert anonymous.status_code == (401 if protected else 200)
        if protected:
            assert anonymous.headers["www-authenticate"].startswith("Basic")
            for bad in (("prom", "wrong"), ("other", "secret")):
                assert httpx.get(f"{server.url}/metrics", auth=bad, timeout=5).status_code == 401
            garbage = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}
            assert httpx.get(f"{server.url}/metrics", headers=garbage, timeout=5).status_code == 401
        good = httpx.get(f"{server.url}/metrics", auth=("prom", "secret"), timeout=5)
        assert good.status_code == 200 and good.headers["content-type"].startswith("text/plain")
