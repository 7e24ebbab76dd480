"""Real processes for end-to-end and fault tests: Celery workers as subprocesses, the sandbox in a thread.

Nothing of ours is mocked: the worker is `celery -A worker.app worker` started the way an operator
would, pointed by environment variables at a real PostgreSQL, a real Redis and the sandbox.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from models import FINAL as INVOICE_FINAL
from models import Store
from sandbox.mseller.config import DEFAULT_API_KEY as MSELLER_API_KEY
from sandbox.mseller.config import DEFAULT_EMAIL as MSELLER_EMAIL
from sandbox.mseller.config import DEFAULT_PASSWORD as MSELLER_PASSWORD
from worker.process import worker_command

ROOT = Path(__file__).resolve().parents[1]
FINAL = set(INVOICE_FINAL)


def transition_path(store: Store, job_id: str) -> list[tuple[str | None, str]]:
    """The job's transitions in order, for checking a history against its state machine."""
    return [
        (e.from_state, e.to_state)
        for e in store.jobs.events(job_id)
        if e.kind in ("transition", "retry") and e.to_state is not None
    ]


def pipeline_env(
    *,
    database_url: str,
    broker_url: str | None,
    sandbox_url: str,
    home: Path,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment for a worker (and for the producer in the test process) on the given servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSUITE_", "HACIENDA_", "MSELLER_", "EINVOICE_"))}
    # A metric observed in the test process points it at a metrics folder of its own; the stack's
    # processes must use the one under their EINVOICE_HOME.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("CELERY_BROKER_URL", None)
    env.update(
        {
            "DATABASE_URL": database_url,
            "EINVOICE_HOME": str(home),
            "ARCHIVE_DIR": str(home / "archive"),
            "MYSUITE_ASYNC_URL": f"{sandbox_url}/mysuite/async/factwsfront.asmx",
            "MYSUITE_SYNC_URL": f"{sandbox_url}/mysuite/sync/FactWSFront.asmx",
            "MYSUITE_ASYNC_MIN_BYTES": "4096",
            "HACIENDA_API_URL": f"{sandbox_url}/hacienda/recepcion/v1/",
            "HACIENDA_IDP_URL": f"{sandbox_url}/hacienda/idp/auth/realms/rut-stag/protocol/openid-connect/token",
            "MSELLER_URL": f"{sandbox_url}/mseller",
            "MSELLER_EMAIL": MSELLER_EMAIL,
            "MSELLER_PASSWORD": MSELLER_PASSWORD,
            "MSELLER_API_KEY": MSELLER_API_KEY,
            "EINVOICE_SWEEP_INTERVAL_SECONDS": "1",
            "EINVOICE_REDISPATCH_SECONDS": "3",
            "EINVOICE_POLL_SECONDS_PER_MB": "1",
            "EINVOICE_POLL_MIN_SECONDS": "0.2",
            "EINVOICE_POLL_BASE_SECONDS": "0.3",
            "EINVOICE_RETRY_BASE_SECONDS": "0.2",
            "EINVOICE_RETRY_CAP_SECONDS": "2",
            "EINVOICE_LEASE_SECONDS": "10",
            "EINVOICE_RESEND_AFTER_SECONDS": "3",
            "EINVOICE_OUTAGE_PROBE_SECONDS": "0.5",
            "EINVOICE_OUTAGE_PROBE_CAP_SECONDS": "2",
            "PYTHONPATH": str(ROOT),
        }
    )
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url
    env.update(extra or {})
    return env


def run_cli(
    env: dict[str, str], *args: str, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`einvoice ARGS` in a subprocess, as an ERP integration or an operator would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"einvoice {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result


class Worker:
    """One `celery worker` subprocess; `-B` embeds beat so the sweeps run too."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        pool: str = "threads",
        concurrency: int = 8,
        beat: bool = True,
        queues: Iterable[str] | None = None,
        name: str = "w1",
    ) -> None:
        self.env = env
        self.log_path = log_path
        schedule = Path(env["EINVOICE_HOME"]) / f"beat-{name}" if beat else None
        self.args = worker_command(
            name=f"{name}-{os.getpid()}", pool=pool, concurrency=concurrency, beat_schedule=schedule, queues=queues
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker and its pool children die mid-task."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def sandbox_admin(sandbox_url: str, provider: str = "mysuite") -> Callable[..., Any]:
    """Call the sandbox's admin API: admin("counters"), admin("config", {...}), admin("reset")."""

    def call(what: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{sandbox_url}/{provider}/_admin/{what}"
        response = (
            httpx.post(url, json=body or {}, timeout=10)
            if body is not None or what == "reset"
            else httpx.get(url, timeout=10)
        )
        response.raise_for_status()
        return response.json()

    return call
