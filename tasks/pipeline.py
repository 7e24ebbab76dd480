"""Celery's view of the workflows: one task per declared step, the sweep, and payload retention.

Each task only unpacks its message (job ids) and hands it to the runner with this process's
services; everything else lives in `tasks/runner.py` (how any step runs) and `tasks/workflows.py`
(which steps exist).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task, shared_task

from models.states import final_states
from tasks import runner
from tasks.context import celery_dispatch, doorbell, policy, services
from tasks.workflow import StepSpec
from tasks.workflows import all_steps, workflow

log = logging.getLogger("einvoice.tasks")

PURGE_BATCH = 500


def _bind(spec: StepSpec) -> Any:
    def step(task: Task, job_ids: list[str] | str, wake: str | None = None) -> dict[str, str]:
        ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
        return runner.run_step(services(), spec, ids, wake=wake, due_at=_eta(task.request.eta))

    step.__name__ = spec.name.rsplit(".", 1)[-1]
    step.__doc__ = spec.run.__doc__
    return shared_task(name=spec.name, bind=True, acks_late=True, ignore_result=True)(step)


def _eta(value: str | datetime | None) -> datetime | None:
    """A message's countdown, as the time it was due (Celery hands it over as ISO 8601 text)."""
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


STEP_TASKS = {spec.name: _bind(spec) for spec in all_steps()}


@shared_task(name="einvoice.sweep", ignore_result=True)
def sweep() -> int:
    return runner.sweep(services())


@shared_task(name="einvoice.purge_payloads", ignore_result=True)
def purge_payloads() -> int:
    """Empty the document bytes of jobs final for longer than the retention; keep job, events, sha256."""
    svc = services()
    days = svc.policy.payload_retention_days
    total = 0
    while True:
        purged = svc.store.schedule.purge_payloads(
            final_states=final_states(), older_than=timedelta(days=days), limit=500
        )
        total += purged
        if purged < PURGE_BATCH:
            break
    if total:
        log.info("purged the payloads of %d jobs final for more than %g days", total, days)
    return total


def dispatch(
    job_id: str,
    state: str,
    delay: float = 0.0,
    *,
    kind: str = "invoice",
    provider: str | None = None,
    size_bytes: int = 0,
) -> None:
    """Publish the step that a job of `kind` in `state` is waiting for (producer, operator).

    Given its `provider`, a job due now that its step would gather (`runner.gatherable`) rings the
    provider's doorbell instead: a wake-up already pending will claim it (`tasks.doorbell`).
    """
    spec = workflow(kind).step_for(state)
    if spec is None:
        raise ValueError(f"a {kind} in state {state} has no step to run")
    if provider is not None and not delay and runner.gatherable(policy(), spec, size_bytes):
        runner.ring(doorbell(), celery_dispatch, spec, provider, [job_id])
    else:
        celery_dispatch(spec.name, spec.queue, [job_id], delay)
