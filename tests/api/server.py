"""The API as an operator runs it: `einvoice api` in a subprocess, against the test stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sandbox.server import free_port
from tests.harness import ROOT, run_cli, wait_until

API_SECRET = "test-server-secret-" + "x" * 40
MYSUITE_ENTITY = "JES900109Q90"
HACIENDA_ENTITY = "3101123456"


def api_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "EINVOICE_API_SECRET": API_SECRET, "HACIENDA_ENTITY": HACIENDA_ENTITY}


@dataclass
class ApiServer:
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "api", "--port", str(self.port), "--workers", str(self.workers)],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._live, 60, what="the API to start")
        return self

    def _live(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"einvoice api exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/livez", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def create_key(env: dict[str, str], role: str, entity: str | None = None) -> dict[str, Any]:
    args = ["keys", "create", "--role", role, "--json"]
    if entity is not None:
        args += ["--entity", entity]
    data: dict[str, Any] = json.loads(run_cli(env, *args).stdout)
    return data


def auth(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}
