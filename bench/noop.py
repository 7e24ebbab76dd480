"""Celery's own ceiling: the service's app with one trivial task, run by the same worker settings.

`celery -A bench.noop worker -Q bench ...` loads exactly the configuration of `worker.app` (broker,
serializer, acks_late, prefetch, pool options) and adds a task that does nothing, so the rate at
which it drains a queue is what Celery and Redis alone cost per task on this machine.
"""

from __future__ import annotations

from worker.app import app

QUEUE = "bench"
NAME = "bench.noop"


@app.task(name=NAME, acks_late=True, ignore_result=True)
def noop() -> None:
    return None


__all__ = ["app", "noop"]
