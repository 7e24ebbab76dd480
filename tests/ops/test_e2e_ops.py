"""What an operator sees after a real run: `einvoice metrics` and Flower, against real workers.

Invoices go through the CLI into PostgreSQL and Redis, a prefork worker with embedded beat carries
them to the sandbox and back, and the tests then read the operator-facing endpoints over HTTP and
hold them against the database, which is the source of truth.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from models import Store
from tests.e2e.stack import Stack, write_batch
from tests.harness import wait_until
from tests.ops.procs import AUTH, Samples, flower_service, metrics_service, scrape, select, value
from worker.samples import native_xml

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(pg_stack: Stack) -> Stack:
    pg_stack.admin("config", {"seed": 5})
    # The default location (under EINVOICE_HOME) is what the workers, the CLI and the server must agree on.
    pg_stack.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return pg_stack


def _transitions(samples: Samples) -> dict[tuple[str, str, str], float]:
    return {
        (labels["provider"], labels["from_state"], labels["to_state"]): count
        for key, count in select(samples, "einvoice_transitions_total").items()
        for labels in [dict(key)]
        if count
    }


def _recorded(store: Store) -> dict[tuple[str, str, str], float]:
    return {(p, f or "none", t or "none"): float(n) for p, f, t, n in store.stats.transition_counts()}


def check_flower(url: str) -> None:
    """Flower runs against our app: it lists our worker with our queues and tasks, behind basic auth."""
    assert httpx.get(f"{url}/api/workers", timeout=10).status_code == 401
    workers = httpx.get(f"{url}/api/workers", params={"refresh": "1"}, auth=AUTH, timeout=20).json()
    registered = {name for info in workers.values() for name in info.get("registered", [])}
    expected = {"einvoice.submit", "einvoice.verify", "einvoice.retrieve", "einvoice.refresh_links", "einvoice.sweep"}
    assert expected <= registered, registered
    assert {q["name"] for info in workers.values() for q in info.get("active_queues", [])} == {"submit", "poll"}

    def seen() -> set[str]:
        tasks = httpx.get(f"{url}/api/tasks", auth=AUTH, timeout=10).json()
        return {task["name"] for task in tasks.values() if task.get("name")}

    # Retrieve runs inside the verify that finds a document issued, so it shows as a task of its
    # own only when the sweep dispatches it; being registered (above) is what Flower must show.
    wait_until(
        lambda: {"einvoice.submit", "einvoice.verify", "einvoice.sweep"} <= seen(),
        timeout=10,
        what="our tasks in Flower's task list",
    )


def test_metrics_and_flower_after_a_run_and_an_outage(stack: Stack, tmp_path: Path) -> None:
    """One run feeds both views (a worker start-up is the slow part): Flower first, then the metrics."""
    stack.admin("config", {"failure_rate": 0.25})
    docs = write_batch(tmp_path / "batch", 8, "OPS")
    with ExitStack() as running:
        worker = stack.worker(pool="prefork", concurrency=2).start()
        running.callback(worker.stop)
        metrics = metrics_service(stack.env, tmp_path / "metrics.log")
        running.callback(metrics.stop)
        metrics.start("/healthz")
        flower = flower_service(stack.env, tmp_path / "flower.log")
        running.callback(flower.stop)
        flower.start("/healthcheck")
        # The node's metrics directory is wiped at start-up: nothing may be counted before it is.
        wait_until(lambda: " ready." in worker.log_text(), timeout=30, what="the worker to be ready")
        # Flower turns task events on in running workers by remote control, every few seconds.
        wait_until(lambda: "enabled by remote" in worker.log_text(), timeout=20, what="Flower to enable task events")
        stack.submit_batch(tmp_path / "batch")
        wait_until(lambda: stack.all_final(len(docs)), timeout=60, what="every invoice in a final state")
        check_flower(flower.url)

        # Counters are written right after each commit; give the last one a moment to land.
        wait_until(
            lambda: _transitions(scrape(metrics.url)) == _recorded(stack.store),
            timeout=10,
            what="transition counters equal to the transitions recorded in the database",
        )
        samples = scrape(metrics.url)
        recorded = _recorded(stack.store)
        assert recorded[("mysuite", "none", "invalid")] == 1
        assert recorded.get(("mysuite", "submitted", "failed"), 0) >= 1

        by_state = {(p, s): n for p, s, n in stack.store.stats.count_by_state()}
        jobs = select(samples, "einvoice_jobs")
        assert {(dict(k)["provider"], dict(k)["state"]) for k in jobs} >= set(by_state)
        for key, count in jobs.items():
            labels = dict(key)
            assert count == by_state.get((labels["provider"], labels["state"]), 0), labels

        left_submitted = sum(n for (p, f, _), n in recorded.items() if p == "mysuite" and f == "submitted")
        issued = recorded[("mysuite", "submitted", "issued")]
        assert value(samples, "einvoice_polls_per_document_count", provider="mysuite") == left_submitted
        assert value(samples, "einvoice_time_to_issue_seconds_count", provider="mysuite") == issued
        assert (value(samples, "einvoice_time_to_issue_seconds_sum", provider="mysuite") or 0) > 0
        jobs_now = stack.store.jobs.list_jobs()
        assert value(samples, "einvoice_polls_per_document_sum", provider="mysuite") == sum(
            j.polls for j in jobs_now if j.submitted_at is not None
        )
        assert value(samples, "einvoice_oldest_due_seconds", provider="mysuite") == 0
        assert value(samples, "einvoice_provider_up", provider="mysuite") == 1
        # Documents of 4 KiB and more go to the async service: one accepted submit each (small ones use sync).
        async_submitted = sum(1 for j in jobs_now if j.submitted_at is not None and j.size_bytes >= 4096)
        labels = {"provider": "mysuite", "operation": "submit"}
        assert value(samples, "einvoice_provider_requests_total", outcome="ok", **labels) == async_submitted
        assert value(samples, "einvoice_provider_request_duration_seconds_count", **labels) == async_submitted

        # An outage: the next submit fails with a transient error and the provider shows as down.
        stack.admin("config", {"outage": True, "failure_rate": 0.0})
        outage_doc = tmp_path / "outage.xml"
        outage_doc.write_bytes(native_xml("OPS-OUTAGE", 9000))
        stack.cli("submit", str(outage_doc), "--internal-id", "OPS-OUTAGE")
        wait_until(
            lambda: value(scrape(metrics.url), "einvoice_provider_up", provider="mysuite") == 0,
            timeout=20,
            what="einvoice_provider_up to drop to 0 during the outage",
        )
        transient = select(scrape(metrics.url), "einvoice_provider_requests_total", outcome="transient")
        assert sum(transient.values()) >= 1
        stack.admin("config", {"outage": False})
        wait_until(lambda: stack.store.jobs.resolve("OPS-OUTAGE").state == "retrieved", timeout=30, what="recovery")
        wait_until(
            lambda: value(scrape(metrics.url), "einvoice_provider_up", provider="mysuite") == 1,
            timeout=10,
            what="einvoice_provider_up back to 1 after the outage",
        )
        wait_until(
            lambda: _transitions(scrape(metrics.url)) == _recorded(stack.store),
            timeout=10,
            what="counters still equal to the database after the outage",
        )
        unauthenticated = httpx.get(f"{metrics.url}/metrics", timeout=10)
        assert unauthenticated.status_code == 401
        assert httpx.get(f"{metrics.url}/metrics", auth=(AUTH[0], "wrong"), timeout=10).status_code == 401
    # Every process wrote under the default directory: the worker node's folder and the CLI's.
    folders = {p.name.split("-")[0] for p in (stack.home / "metrics").iterdir() if p.is_dir()}
    assert folders == {"worker", "clients"}
