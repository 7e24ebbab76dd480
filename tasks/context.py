"""The services of this process's Celery tasks, built once per process.

Engines and HTTP pools must not cross a fork, so the worker calls `reset()` in each new child.
Only the Celery boundary looks services up here; the runner and the steps receive them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from celery import current_app

from models import Store, make_engine
from providers import get_provider
from tasks.doorbell import Doorbell, for_broker
from tasks.policy import Policy
from tasks.services import Services

_lock = threading.RLock()
_services: Services | None = None
_doorbell: Doorbell | None = None

# Callbacks run on every store this process creates: the worker attaches its metrics here, so
# tasks never import the worker.
store_setup: list[Callable[[Store], None]] = []


def policy() -> Policy:
    return Policy.from_mapping(current_app.conf.get("einvoice_policy"))


def celery_dispatch(
    task: str, queue: str, job_ids: Sequence[str], countdown: float, *, wake: str | None = None
) -> None:
    """Publish a step's message: only job ids travel, and never with a long countdown."""
    limit = policy().max_countdown_seconds
    kwargs = {"wake": wake} if wake is not None else None
    current_app.send_task(
        task, args=[list(job_ids)], kwargs=kwargs, queue=queue, countdown=min(countdown, limit) or None
    )


def doorbell() -> Doorbell:
    """This process's doorbell, kept in the broker's Redis (producers ring it too)."""
    global _doorbell
    with _lock:
        if _doorbell is None:
            _doorbell = for_broker(str(current_app.conf.broker_url or ""), policy().redispatch_seconds)
        return _doorbell


def services() -> Services:
    global _services
    with _lock:
        if _services is None:
            store = Store(make_engine())
            for setup in store_setup:
                setup(store)
            _services = Services(
                store=store, policy=policy(), provider=get_provider, dispatch=celery_dispatch, doorbell=doorbell()
            )
        return _services


def reset() -> None:
    """Forget the parent's connections in a forked child (they would be shared sockets otherwise)."""
    global _services, _doorbell
    with _lock:
        if _services is not None:
            _services.store.engine.dispose(close=False)
        _services = None
        _doorbell = None
