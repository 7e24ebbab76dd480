"""What an operator does by hand: retry a failed or expired job, refresh its links now."""

from __future__ import annotations

import getpass
from datetime import timedelta

from models import Job, JobState, Store, utcnow
from tasks.context import services
from tasks.pipeline import dispatch
from tasks.policy import Policy
from tasks.runner import run_step
from tasks.workflows import workflow


def operator_actor() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except Exception:
        return "operator"


def retry(store: Store, ref: str, policy: Policy, actor: str | None = None) -> Job:
    """failed/expired -> back to work. A job the provider already accepted resumes polling
    (submitted); one that never got a request id is submitted again under the same internal id,
    which the provider's idempotency key protects against a second document. The attempt count is
    kept: it tells a synchronous provider's client that the document may have been sent before, so
    it looks it up instead of issuing it a second time."""
    job = store.jobs.resolve(ref)
    state = JobState(job.state)
    if state not in (JobState.FAILED, JobState.EXPIRED):
        raise ValueError(f"job {job.id} is {state}; only failed or expired jobs can be retried")
    target = JobState.SUBMITTED if job.provider_request_id and state is JobState.EXPIRED else JobState.QUEUED
    now = utcnow()
    moved = store.steps.transition(
        job.id,
        state,
        target,
        actor=actor or operator_actor(),
        kind="retry",
        message=f"operator retry from {state}",
        next_attempt_at=now + timedelta(seconds=policy.redispatch_seconds),
        fields={
            "deadline_at": now + timedelta(seconds=policy.deadline_seconds),
            "error_class": None,
            "error_code": None,
            "error_message": None,
        },
    )
    if not moved:
        raise ValueError(f"job {job.id} changed state meanwhile; look again")
    dispatch(job.id, target, kind=job.kind)
    return store.jobs.get(job.id)


def refresh_now(store: Store, ref: str, actor: str | None = None) -> Job:
    """Ask the provider for new links right away, in this process."""
    job = store.jobs.resolve(ref)
    if job.state != JobState.RETRIEVED:
        raise ValueError(f"job {job.id} is {job.state}; links exist only once it is retrieved")
    spec = workflow(job.kind).step_for(job.state)
    assert spec is not None
    outcome = run_step(services(), spec, [job.id], actor=actor or operator_actor()).get(job.id)
    if outcome != "links":
        raise ValueError(f"links of job {job.id} were not refreshed ({outcome})")
    return store.jobs.get(job.id)
