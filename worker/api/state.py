"""What every request needs: the store, the server secret and the policy of retries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from models import Store
from models.access import ServerSecret
from tasks.policy import Policy


@dataclass(frozen=True)
class ApiState:
    store: Store
    secret: ServerSecret
    policy: Policy
    archive_dir: Path


async def api_state(request: Request) -> ApiState:
    """async only so that FastAPI calls it on the event loop rather than through its thread pool."""
    state: ApiState = request.app.state.einvoice
    return state
