"""Per-process resources of the tasks: the store and the policy.

Engines and HTTP pools must not cross a fork, so the worker calls `reset()` in each new child.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from celery import current_app

from models import Store, make_engine
from tasks.policy import Policy, ProcessingModel, fit_processing

_lock = threading.Lock()
_store: Store | None = None

MODEL_TTL_SECONDS = 5.0
"""How long a fitted processing model is reused. Every submit and every pending poll needs one;
refitting from the database each time would cost two queries per step for an estimate that moves
slowly."""
_models: dict[str, tuple[float, ProcessingModel | None]] = {}

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


def processing_model(provider: str) -> ProcessingModel | None:
    """The provider's processing time as learnt from its recent documents (None without history)."""
    now = time.monotonic()
    with _lock:
        cached = _models.get(provider)
    if cached is not None and now - cached[0] < MODEL_TTL_SECONDS:
        return cached[1]
    model = fit_processing(store().processing_samples(provider), policy())
    with _lock:
        _models[provider] = (now, model)
    return model


def reset() -> None:
    """Forget the parent's connections in a forked child (they would be shared sockets otherwise)."""
    global _store
    with _lock:
        if _store is not None:
            _store.engine.dispose(close=False)
        _store = None
        _models.clear()
