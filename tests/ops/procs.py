"""Operator-side processes for the ops tests: `einvoice metrics` and Flower, started as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sandbox.server import free_port
from tests.harness import ROOT, wait_until

AUTH = ("ops", "s3cret-for-tests")


class Service:
    """A long-running subprocess serving HTTP on a free port, stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.args, self.env, self.log_path, self.port = args, env, log_path, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 30) -> Service:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args[3:5]} exited: {self.log_path.read_text(errors='replace')}")
            try:
                httpx.get(self.url + ready_path, timeout=2)
                return True
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout=timeout, what=f"{self.url}{ready_path}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def metrics_service(env: dict[str, str], log_path: Path, *, auth: bool = True) -> Service:
    port = free_port()
    env = dict(env)
    if auth:
        env["METRICS_BASIC_AUTH"] = ":".join(AUTH)
    return Service([sys.executable, "-m", "worker.cli", "metrics", "--port", str(port)], env, log_path, port)


def flower_service(env: dict[str, str], log_path: Path) -> Service:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "flower",
        f"--port={port}",
        "--address=127.0.0.1",
        "--persistent=False",
        f"--basic-auth={':'.join(AUTH)}",
    ]
    return Service(args, env, log_path, port)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of one scrape, keyed by (sample name, sorted labels)."""
    response = httpx.get(f"{url}/metrics", auth=AUTH, timeout=10)
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def select(samples: Samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one name whose labels include `labels`."""
    return {
        key: value
        for (sample, key), value in samples.items()
        if sample == name and all(dict(key).get(k) == v for k, v in labels.items())
    }


def value(samples: Samples, name: str, **labels: Any) -> float | None:
    key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
    return samples.get(key)
