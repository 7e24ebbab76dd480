from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.server import ServerThread
from tests.api.server import api_env
from tests.e2e.stack import Stack
from tests.harness import Worker
from tests.webhooks.receiver import Receiver

SLOW_SECONDS = 1.5
WEBHOOK_ENV = {
    "EINVOICE_WEBHOOK_ALLOW_PRIVATE": "1",
    "EINVOICE_WEBHOOK_TIMEOUT_SECONDS": "1",
    "EINVOICE_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "EINVOICE_WEBHOOK_RETRY_CAP_SECONDS": "1",
    "EINVOICE_WEBHOOK_SWEEP_SECONDS": "0.5",
}


@pytest.fixture
def hook_stack(pg_stack: Stack) -> Stack:
    pg_stack.env = {**api_env(pg_stack.env), **WEBHOOK_ENV}
    return pg_stack


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver(slow_seconds=SLOW_SECONDS)
    with ServerThread(rec.app()) as server:
        yield rec, server.url


def subscribe(stack: Stack, rec: Receiver, url: str, name: str, events: str, mode: str = "ok") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        stack.cli("webhooks", "add", f"{url}/{name}", "--events", events, "--json").stdout
    )
    rec.secrets[name] = data["secret"]
    rec.modes[name] = mode
    return data


def webhook_worker(stack: Stack, name: str, env: dict[str, str] | None = None, **kwargs: Any) -> Worker:
    """A worker that also runs the webhook tasks (and their sweep, through its embedded beat)."""
    worker = Worker({**stack.env, **(env or {})}, Path(stack.home) / f"{name}.log", name=name, **kwargs)
    worker.args += ["-I", "tasks.webhooks"]
    return worker
