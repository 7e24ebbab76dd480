"""Job references: an internal id equal to another job's id must not hide either job from `status`,
`events`, `retry` or `links`; `job:` and `internal:` say which one is meant."""

from __future__ import annotations

import json

import pytest

from models import ErrorInfo, Job, JobState
from tests.cli.conftest import Cli, invoice
from worker.producer import enqueue

EXIT_REFUSED = 2


@pytest.fixture
def twins(cli: Cli) -> tuple[Job, Job]:
    """Job A, queued, and job B, failed, whose internal id is A's job id."""
    a = enqueue(cli.store, invoice("ERP-A"), "ERP-A", publish=False).job
    b = enqueue(cli.store, invoice(a.id), a.id, publish=False).job
    assert cli.store.steps.transition(
        b.id, JobState.QUEUED, JobState.FAILED, actor="test", error=ErrorInfo("rejected", "refused by the provider")
    )
    return a, b


@pytest.mark.parametrize("command", ["status", "events", "retry", "links"])
def test_a_bare_ref_that_names_two_jobs_is_refused(cli: Cli, twins: tuple[Job, Job], command: str) -> None:
    a, b = twins
    result = cli(command, a.id)
    assert result.returncode == EXIT_REFUSED
    assert "several jobs" in result.stderr and a.id in result.stderr and b.id in result.stderr
    assert f"internal:{a.id}" in result.stderr
    assert cli.store.jobs.get(b.id).state == "failed"


def test_prefixes_say_which_job_is_meant(cli: Cli, twins: tuple[Job, Job]) -> None:
    a, b = twins
    assert json.loads(cli("status", f"job:{a.id}", "--json").stdout)["id"] == a.id
    assert json.loads(cli("status", f"internal:{a.id}", "--json").stdout)["id"] == b.id
    assert json.loads(cli("status", "internal:ERP-A", "--json").stdout)["id"] == a.id

    retried = cli("retry", f"internal:{a.id}")
    assert retried.returncode == 0, retried.stderr
    assert cli.store.jobs.get(b.id).state == "queued" and cli.store.jobs.get(a.id).state == "queued"
    assert cli.store.jobs.events(b.id)[-1].actor.startswith("operator")

    # Neither job is retrieved: the refusal names the job the prefix chose.
    links = cli("links", f"job:{a.id}")
    assert links.returncode == EXIT_REFUSED and f"job {a.id} is queued" in links.stderr


def test_a_prefixed_ref_matches_only_its_kind(cli: Cli) -> None:
    job = enqueue(cli.store, invoice("job:7"), "job:7", publish=False).job
    missing = cli("status", "job:7")
    assert missing.returncode == EXIT_REFUSED
    assert "no job with id '7'" in missing.stderr and "internal:job:7" in missing.stderr
    assert json.loads(cli("status", "internal:job:7", "--json").stdout)["id"] == job.id
    assert cli("status", f"internal:{job.id}").returncode == EXIT_REFUSED
