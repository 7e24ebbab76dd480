"""Per-process resources of the tasks: the store and the policy.

Engines and HTTP pools must not cross a fork, so the worker calls `reset()` in each new child.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from celery import current_app

from models import Store, make_engine
from tasks.policy import Policy

_lock = threading.Lock()
_store: Store | None = None

# Callbacks run on every store this process creates: the worker attaches its metrics here, so
# tasks never import the worker.
store_setup: list[Callable[[Store], None]] = []


def store() -> Store:
    global _store
    with _lock:
        if _store is None:
            _store = Store(make_engine())
            for setup in store_setup:
                setup(_store)
        return _store


def policy() -> Policy:
    return Policy.from_mapping(current_app.conf.get("einvoice_policy"))


def reset() -> None:
    """Forget the parent's connections in a forked child (they would be shared sockets otherwise)."""
    global _store
    with _lock:
        if _store is not None:
            _store.engine.dispose(close=False)
        _store = None
