"""Provider clients. `get_provider(name)` builds one from the environment, once per process."""

from __future__ import annotations

import importlib
import threading

from providers.base import Provider

# Factories are named, not imported, so that a worker that serves one provider never imports the
# other providers' dependencies.
FACTORIES: dict[str, str] = {
    "mysuite": "providers.mysuite:from_env",
    "hacienda": "providers.hacienda:from_env",
    "mseller": "providers.mseller:from_env",
}

_cache: dict[str, Provider] = {}
_lock = threading.Lock()


def provider_names() -> list[str]:
    return sorted(FACTORIES)


def get_provider(name: str) -> Provider:
    """Return this process's client for `name`; clients keep connection pools, so they are shared."""
    with _lock:
        client = _cache.get(name)
        if client is None:
            try:
                target = FACTORIES[name]
            except KeyError:
                raise ValueError(f"unknown provider {name!r}; known: {', '.join(provider_names())}") from None
            module_name, _, attr = target.partition(":")
            factory = getattr(importlib.import_module(module_name), attr)
            client = factory()
            _cache[name] = client
        return client


def reset_providers() -> None:
    """Drop cached clients (after a fork, or when tests change the environment)."""
    with _lock:
        for client in _cache.values():
            client.close()
        _cache.clear()
