"""The real parts every pipeline benchmark runs on, each in a process of its own.

A throwaway PostgreSQL database per run (created and dropped here), a Redis database index of the
benchmarks' own (only our keys are deleted, never the whole server), the sandbox under uvicorn in a
separate process (so its CPU never shares the measuring process's GIL) and Celery workers started
the way an operator would (`celery -A worker.app worker ...`). RSS of the worker process trees is
sampled from here with psutil.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
import sqlalchemy as sa

from tasks.doorbell import KEY_PREFIX

ROOT = Path(__file__).resolve().parents[1]

if threading.current_thread() is threading.main_thread():
    # SIGTERM (a timeout, the runner) unwinds like Ctrl-C, so workers and sandbox get stopped and
    # the throwaway database dropped by the context managers instead of being left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
# `bench.run --quick` points this elsewhere so that quick figures never replace the full run's.
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "bench" / "results")
PG_SERVER = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Tests take random indexes 1-15 and flush them; 0 is left to the benchmarks, which never flush it.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUESTOR = "12211111-1111-1111-1111-111111111111"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- PostgreSQL


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A new database at the latest schema (built by the Alembic chain), dropped afterwards."""
    from worker.schema import upgrade

    name = f"einvoice_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(_psycopg(PG_SERVER), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = f"{PG_SERVER.rsplit('/', 1)[0]}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ------------------------------------------------------------------------------------ Redis


def clean_broker(url: str = REDIS_URL) -> None:
    """Delete the keys Celery/kombu leave for our queues and our doorbells, and nothing else in the
    database (a bell left by the previous run would mute the next run's first wake-up)."""
    client = redis.Redis.from_url(url)
    keys: set[bytes] = set()
    patterns = ("submit", "poll", "bench", "celery", "unacked*", "_kombu.binding.*", "*.reply.celery.pidbox")
    for pattern in (*patterns, KEY_PREFIX + "*"):
        keys.update(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def queue_depth(client: redis.Redis[bytes], *queues: str) -> int:
    """Messages waiting in `queues` plus messages delivered but not yet acknowledged."""
    pipe = client.pipeline()
    for queue in queues:
        pipe.llen(queue)
    pipe.hlen("unacked")
    return sum(int(n) for n in pipe.execute())


# ---------------------------------------------------------------------------------- sandbox

SANDBOX_SCRIPT = "bench.sandbox_proc"


class Sandbox:
    """`python -m bench.sandbox_proc`: the MYSuite simulator plus an in-flight request gauge."""

    def __init__(self, port: int, env: str = "test") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sandbox:
        environ = dict(os.environ, PYTHONPATH=str(ROOT), SANDBOX_MYSUITE_ENV=self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", SANDBOX_SCRIPT, "--port", str(self.port)],
            cwd=ROOT,
            env=environ,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sandbox process exited")
            try:
                self.admin("config")
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("sandbox did not start")

    def admin(self, what: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.url}/mysuite/_admin/{what}"
        if body is not None or what == "reset":
            response = httpx.post(url, json=body or {}, timeout=60)
        else:
            response = httpx.get(url, timeout=60)
        response.raise_for_status()
        return response.json()

    def inflight(self, reset: bool = False) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/_bench/inflight", json={"reset": reset}, timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def configure(self, **knobs: Any) -> None:
        self.admin("reset")
        self.admin("config", {"preset": "default"})
        if knobs:
            self.admin("config", knobs)

    def cpu_seconds(self) -> float:
        return _tree_cpu(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


# ---------------------------------------------------------------------------------- workers


def _tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _tree_cpu(pid: int) -> float:
    total = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def tree_rss(pid: int) -> int:
    total = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


@dataclass
class WorkerSpec:
    """One `celery worker` process: its pool, concurrency and queues (all queues when empty)."""

    name: str
    pool: str = "prefork"
    concurrency: int = 2
    queues: tuple[str, ...] = ()
    beat: bool = False
    app: str = "worker.app"
    extra_args: tuple[str, ...] = ()

    def describe(self) -> str:
        queues = ",".join(self.queues) or "all"
        return f"{self.name}: -P {self.pool} -c {self.concurrency} -Q {queues}{' -B' if self.beat else ''}"


@dataclass
class Stack:
    """Environment shared by the workers and the producer of one benchmark run."""

    database_url: str
    sandbox: Sandbox
    home: Path
    broker_url: str = REDIS_URL
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[tuple[WorkerSpec, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSUITE_", "HACIENDA_", "EINVOICE_"))}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "CELERY_BROKER_URL": self.broker_url,
                "EINVOICE_HOME": str(self.home),
                "ARCHIVE_DIR": str(self.home / "archive"),
                "MYSUITE_ASYNC_URL": f"{self.sandbox.url}/mysuite/async/factwsfront.asmx",
                "MYSUITE_SYNC_URL": f"{self.sandbox.url}/mysuite/sync/FactWSFront.asmx",
                "MYSUITE_REQUESTOR": REQUESTOR,
                "MYSUITE_ENV": self.sandbox.env,
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(self.extra_env)
        return env

    def apply_env(self) -> None:
        """Point this process (the producer) at the same servers; read by settings on first import."""
        for key in [k for k in os.environ if k.startswith(("MYSUITE_", "EINVOICE_"))]:
            del os.environ[key]
        os.environ.update(self.env)

    def start_worker(self, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            spec.app,
            "worker",
            "--pool",
            spec.pool,
            "-c",
            str(spec.concurrency),
            "--loglevel",
            "WARNING",
            "-n",
            f"{spec.name}-{os.getpid()}@%h",
            "--without-mingle",
            "--without-gossip",
            *spec.extra_args,
        ]
        if spec.queues:
            args += ["-Q", ",".join(spec.queues)]
        if spec.beat:
            args += ["-B", "-s", str(self.home / f"beat-{spec.name}")]
        profile_dir = os.environ.get("BENCH_PROFILE_DIR")
        if profile_dir:
            # py-spy samples the worker and its pool children; raw output folds into a flame graph.
            out = Path(profile_dir) / f"{spec.name}-{int(time.time())}.txt"
            args = ["py-spy", "record", "--subprocesses", "-r", "250", "-f", "raw", "-o", str(out), "--", *args]
        log_file = (self.home / f"{spec.name}.log").open("ab")
        proc = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.workers.append((spec, proc))
        return proc

    def worker_pids(self) -> list[int]:
        return [proc.pid for _, proc in self.workers if proc.poll() is None]

    def worker_rss(self) -> int:
        return sum(tree_rss(pid) for pid in self.worker_pids())

    def worker_cpu(self) -> float:
        return sum(_tree_cpu(pid) for pid in self.worker_pids())

    def stop_workers(self) -> None:
        for _, proc in self.workers:
            if proc.poll() is None:
                if os.environ.get("BENCH_PROFILE_DIR"):
                    # Stop the worker under py-spy; py-spy writes its profile when its target exits.
                    for child in psutil.Process(proc.pid).children():
                        child.send_signal(signal.SIGTERM)
                else:
                    proc.send_signal(signal.SIGTERM)
        for _, proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.workers.clear()

    def worker_log_tail(self, lines: int = 40) -> str:
        out = []
        for spec, _ in self.workers:
            path = self.home / f"{spec.name}.log"
            if path.exists():
                out.append(f"--- {spec.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)


@contextlib.contextmanager
def sandbox_process(env: str = "test") -> Iterator[Sandbox]:
    from sandbox.server import free_port

    box = Sandbox(free_port(), env=env).start()
    try:
        yield box
    finally:
        box.stop()


@contextlib.contextmanager
def stack(sandbox: Sandbox, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A fresh database, a clean broker and a scratch home for one measured run."""
    clean_broker()
    with pg_database() as url, tempfile.TemporaryDirectory(prefix="einvoice-bench-") as home:
        st = Stack(url, sandbox, Path(home), extra_env=dict(extra_env or {}))
        try:
            yield st
        finally:
            st.stop_workers()
            clean_broker()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class Sampler:
    """Calls `sample()` every `interval` seconds on a thread and keeps (elapsed, value) pairs."""

    def __init__(self, sample: Callable[[], Any], interval: float) -> None:
        self._sample = sample
        self._interval = interval
        self._stop = threading.Event()
        self.values: list[tuple[float, Any]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.values.append((time.monotonic() - self._start, self._sample()))
            self._stop.wait(self._interval)

    def __enter__(self) -> Sampler:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------- results


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(name: str, report: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    report = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **report,
    }
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def command_line(module: str, argv: list[str] | None) -> str:
    """The command as it was run, for the JSON result (`argv` is None when run from the shell)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m " + module, *args])
