"""The whole workflow in-process: the real runner and store on SQLite, a scripted provider, a fixed
clock, and the broker replaced by a list of messages that the test delivers itself."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from models import Job, Store, make_engine
from tasks.policy import Policy
from tasks.runner import gatherable, ring, run_step, sweep
from tasks.services import Services
from tasks.workflows import all_steps
from tests.workflow.memory import FixedClock, MemoryProvider

STEPS = {spec.name: spec for spec in all_steps()}


@dataclass
class Sent:
    task: str
    queue: str
    job_ids: list[str]
    countdown: float
    wake: str | None = None


@dataclass
class Flow:
    """One in-process installation: what a test drives and inspects."""

    store: Store
    services: Services
    clock: FixedClock
    provider: MemoryProvider
    outbox: list[Sent] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)

    def enqueue(self, internal_id: str, payload: bytes = b"<doc/>") -> Job:
        job, _ = self.store.jobs.create_job(
            provider=self.provider.name,
            entity=self.provider.entity,
            internal_id=internal_id,
            payload=payload,
            actor="test",
            deadline=timedelta(seconds=self.services.policy.deadline_seconds),
            dispatch_grace=timedelta(seconds=self.services.policy.redispatch_seconds),
        )
        spec = STEPS["einvoice.submit"]
        if gatherable(self.services.policy, spec, job.size_bytes):
            ring(self.services.doorbell, self.services.dispatch, spec, job.provider, [job.id])
        else:
            self.services.dispatch(spec.name, spec.queue, [job.id], 0.0)
        return job

    def one_at_a_time(self) -> None:
        """A submit claims only the job its message names: for tests of what each call decides."""
        self.services = replace(self.services, policy=replace(self.services.policy, submit_batch=1))

    def run(
        self, task: str, job_ids: list[str], wake: str | None = None, due_at: datetime | None = None
    ) -> dict[str, str]:
        return run_step(self.services, STEPS[task], job_ids, wake=wake, due_at=due_at)

    def deliver(self, *, limit: int | None = None) -> list[dict[str, str]]:
        """Deliver messages in order (at most `limit`, else until none is left), moving the clock
        to each one's countdown."""
        results: list[dict[str, str]] = []
        for _ in range(limit or 100):
            if not self.outbox:
                return results
            message = self.outbox.pop(0)
            self.clock.advance(message.countdown)
            due = self.clock() if message.countdown else None
            results.append(self.run(message.task, message.job_ids, message.wake, due))
        if limit is None:
            raise AssertionError("messages keep coming")
        return results

    def sweep(self) -> int:
        return sweep(self.services)

    def job(self, job_id: str) -> Job:
        return self.store.jobs.get(job_id)

    def kinds(self, job_id: str) -> list[tuple[str, str | None, str | None]]:
        return [(e.kind, e.from_state, e.to_state) for e in self.store.jobs.events(job_id)]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.schema import upgrade

    path = tmp_path_factory.mktemp("template") / "einvoice.db"
    upgrade(f"sqlite:///{path}")
    return path


def test_policy(tmp_path: Path) -> Policy:
    return Policy(
        archive_dir=str(tmp_path / "archive"),
        retry_base_seconds=1.0,
        retry_cap_seconds=60.0,
        resend_after_seconds=30.0,
        rate_limited_min_seconds=5.0,
        outage_after_failures=3,
        outage_probe_seconds=10.0,
        outage_probe_cap_seconds=60.0,
        deadline_seconds=3600.0,
        lease_seconds=60.0,
        redispatch_seconds=30.0,
        calls_at_once=1,  # calls in a fixed order; tests/workflow/test_side_by_side.py covers more
    )


@pytest.fixture
def flow(sqlite_template: Path, tmp_path: Path) -> Iterator[Flow]:
    db = tmp_path / "einvoice.db"
    shutil.copy(sqlite_template, db)
    yield from _flow(f"sqlite:///{db}", tmp_path)


@pytest.fixture
def pg_flow(migrated_pg_url: str, tmp_path: Path) -> Iterator[Flow]:
    """The same on PostgreSQL, for what SQLite does not check (column lengths)."""
    yield from _flow(migrated_pg_url, tmp_path)


def _flow(url: str, tmp_path: Path) -> Iterator[Flow]:
    clock = FixedClock()
    store = Store(make_engine(url), clock=clock)
    provider = MemoryProvider(clock=clock)
    outbox: list[Sent] = []
    sent: list[Sent] = []

    def dispatch(task: str, queue: str, job_ids: Sequence[str], countdown: float, *, wake: str | None = None) -> None:
        outbox.append(Sent(task, queue, list(job_ids), countdown, wake))
        sent.append(outbox[-1])

    services = Services(store=store, policy=test_policy(tmp_path), provider=lambda name: provider, dispatch=dispatch)
    yield Flow(store, services, clock, provider, outbox, sent)
    store.engine.dispose()
