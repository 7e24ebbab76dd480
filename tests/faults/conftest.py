"""The fault suite's stack: a private Redis it may kill, the sandbox with a call counter, PostgreSQL.

Every scenario pushes a batch of invoices through the `einvoice` CLI into real Celery workers
(subprocesses), breaks something while they work, and then checks the database and the sandbox's
counters. The figures of each scenario are collected here and printed at the end of the run.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models import Event, Store, make_engine
from models.states import is_valid_path
from sandbox.app import build_app
from sandbox.server import ServerThread, free_port
from tests.harness import FINAL, Worker, pipeline_env, run_cli, sandbox_admin, transition_path, wait_until
from worker.samples import native_xml

OBSERVER = "faults-observer"
RESULTS: list[dict[str, Any]] = []
TRANSACTION = re.compile(rb"<(?:\w+:)?Transaction>(\w+)<")

# Short waits (tests/harness.py) so that recovery shows within seconds; the production defaults are in
# tasks/policy.py and their bounds in RELIABILITY.md.
FAULT_ENV = {"EINVOICE_OUTAGE_AFTER_FAILURES": "6"}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.write_sep("=", "fault suite figures")
    for row in RESULTS:
        states = ", ".join(f"{state} {count}" for state, count in sorted(row["final"].items()))
        extra = "".join(f" {key}={value}" for key, value in row.get("extra", {}).items())
        terminalreporter.write_line(
            f"{row['scenario']:<22} sent {row['sent']:>3}  final: {states}  "
            f"sandbox 3196 duplicates {row['duplicates']} (adopted), documents twice {row['documents_twice']}  "
            f"recovery {row['recovery_s']:.1f}s  run {row['seconds']:.0f}s{extra}"
        )


class CallCounter:
    """Counts the SOAP calls that reach the sandbox, outage or not (the sandbox counts only the
    ones it executes), with their time and transaction, so a test can count the calls inside a
    window and say which steps made them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls: list[tuple[float, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and ".asmx" in scope["path"].lower():
            at = time.time()
            first = await receive()
            found = TRANSACTION.search(first.get("body", b"")[:4096])
            self.calls.append((at, found.group(1).decode() if found else "?"))
            replay = [first]

            async def again() -> Message:
                return replay.pop() if replay else await receive()

            await self.app(scope, again, send)
            return
        await self.app(scope, receive, send)

    def between(self, start: float, end: float) -> Counter[str]:
        """The calls inside the window, by transaction (`.total()` for all of them)."""
        return Counter(name for t, name in list(self.calls) if start <= t <= end)


@dataclass
class Sandbox:
    url: str
    calls: CallCounter


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    counter = CallCounter(build_app())
    with ServerThread(counter) as server:
        yield Sandbox(server.url, counter)


class PrivateRedis:
    """A redis-server of the suite's own on a free port, without persistence, that it may kill."""

    def __init__(self, folder: Path, password: str) -> None:
        self.folder = folder
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed by the fault suite"
        self.proc = subprocess.Popen(
            [
                binary,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--requirepass", self.password, "--dir", str(self.folder)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=10, interval=0.05, what="private redis-server")

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis[bytes]:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def flush(self) -> None:
        self.client().flushdb()


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"), "r3d1s-Pa55-Z9q")
    server.start()
    yield server
    server.kill()


def batch(prefix: str, count: int, *, small_every: int = 25) -> dict[str, bytes]:
    """`count` invoices: most over the async minimum, every `small_every`-th small (sync path).

    Folios are unique per internal id, as a real series issues them: a lookup by serie and folio
    after a lost answer must find this document, not one of another batch.
    """
    docs = {}
    for n in range(count):
        key = f"{prefix}-{n:03d}"
        size = 1200 if n % small_every == small_every - 1 else 5000 + 600 * (n % 8)
        docs[key] = native_xml(key, size, folio=zlib.crc32(key.encode()))
    return docs


@dataclass
class FaultStack:
    env: dict[str, str]
    store: Store
    database_url: str
    sandbox: Sandbox
    redis: PrivateRedis
    home: Path
    admin: Any
    started: float = field(default_factory=time.monotonic)
    workers: list[Worker] = field(default_factory=list)

    def cli(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(env or self.env, *args, check=check)

    def submit(self, docs: dict[str, bytes], folder: str) -> None:
        path = self.home / folder
        path.mkdir(parents=True, exist_ok=True)
        for key, payload in docs.items():
            (path / f"{key}.xml").write_bytes(payload)
        self.cli("submit", str(path), "--json")

    def worker(self, name: str = "w1", *, concurrency: int = 6, loglevel: str = "INFO", **kwargs: Any) -> Worker:
        worker = Worker(self.env, self.home / f"{name}.log", name=name, concurrency=concurrency, **kwargs)
        worker.args[worker.args.index("--loglevel") + 1] = loglevel
        self.workers.append(worker.start())
        return worker

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for _, state, count in self.store.stats.count_by_state():
            totals[state] = totals.get(state, 0) + count
        return totals

    def all_final(self, expected: int) -> bool:
        counts = self.counts()
        return sum(counts.values()) == expected and all(state in FINAL for state in counts)

    def wait_final(self, expected: int, timeout: float = 150) -> None:
        try:
            wait_until(
                partial(self.all_final, expected),
                timeout=timeout,
                interval=0.5,
                what=f"{expected} jobs in final states",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; states now {self.counts()}") from None

    def leased(self, state: str) -> int:
        now = datetime.now(UTC)
        with self.store.db.session() as session:
            return int(
                session.execute(
                    sa.text("SELECT count(*) FROM jobs WHERE state = :s AND lease_until > :now"),
                    {"s": state, "now": now},
                ).scalar_one()
            )

    def in_flight(self, state: str) -> bool:
        return self.leased(state) > 0

    def progress_after(self, since: datetime, timeout: float = 60) -> float:
        """Seconds from `since` to the first transition committed after it (progress resuming)."""
        found: list[datetime] = []

        def moved() -> bool:
            with self.store.db.session() as session:
                first = session.scalar(
                    sa.select(sa.func.min(Event.at)).where(Event.kind == "transition", Event.at > since)
                )
            if first is None:
                return False
            found.append(first if first.tzinfo else first.replace(tzinfo=UTC))
            return True

        wait_until(moved, timeout=timeout, interval=0.1, what="progress after the fault")
        return (found[-1] - since).total_seconds()

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def worker_logs(self) -> str:
        return "\n".join(w.log_text() for w in self.workers)

    def check(self, docs: dict[str, bytes]) -> dict[str, Any]:
        """Nothing lost, nothing twice: every job final, as the sandbox decided, with a valid history.

        Returns the tally of final states and the duplicates the sandbox answered (3196).
        """
        counters = self.admin("counters")
        jobs = {job.internal_id: job for job in self.store.jobs.list_jobs()}
        assert set(jobs) == set(docs), "every accepted invoice has exactly one job"
        tally: dict[str, int] = {}
        duplicates = 0
        for internal_id, job in jobs.items():
            tally[job.state] = tally.get(job.state, 0) + 1
            path = transition_path(self.store, job.id)
            assert is_valid_path(path), (internal_id, path)
            assert job.state in FINAL, (internal_id, job.state)
            if len(docs[internal_id]) <= 4096:
                sync = counters["sync"].get(internal_id)
                assert sync is not None and sync["documents"] == 1, (internal_id, sync)
                assert job.state == "retrieved", (internal_id, job.state, job.error_message)
            else:
                entry = counters["async"][internal_id]
                assert entry["documents"] == 1, (internal_id, entry)
                duplicates += entry["duplicates"]
                if entry["duplicates"]:
                    assert job.adopted, (internal_id, "a 3196 answer must have been adopted")
                expected = {2: "retrieved", 3: "failed"}[entry["status"]]
                assert job.state == expected, (internal_id, job.state, entry, job.error_message)
                assert job.provider_request_id == entry["request_id"]
            if job.state == "retrieved":
                artifacts = {a.kind: a for a in self.store.jobs.artifacts(job.id)}
                assert set(artifacts) == {"xml", "pdf"}, (internal_id, set(artifacts))
                for artifact in artifacts.values():
                    content = Path(artifact.path).read_bytes()
                    assert hashlib.sha256(content).hexdigest() == artifact.sha256
                    if artifact.content_type == "application/zip":
                        with zipfile.ZipFile(artifact.path) as bundle:
                            assert bundle.testzip() is None
        twice = sum(1 for entry in counters["async"].values() if entry["documents"] > 1)
        twice += sum(1 for entry in counters["sync"].values() if entry["documents"] > 1)
        assert twice == 0
        return {"final": tally, "duplicates": duplicates, "documents_twice": twice}

    def record(self, scenario: str, docs: dict[str, bytes], recovery: float, **extra: Any) -> dict[str, Any]:
        outcome = self.check(docs)
        row = {
            "scenario": scenario,
            "sent": len(docs),
            **outcome,
            "recovery_s": recovery,
            "seconds": time.monotonic() - self.started,
            "extra": extra,
        }
        RESULTS.append(row)
        return row


@pytest.fixture
def fault_stack(
    migrated_pg_url: str, private_redis: PrivateRedis, sandbox: Sandbox, tmp_path: Path
) -> Iterator[FaultStack]:
    if private_redis.proc is None or private_redis.proc.poll() is not None:
        private_redis.start()
    private_redis.flush()
    admin = sandbox_admin(sandbox.url)
    admin("reset")
    admin("config", {"preset": "default"})
    admin(
        "config",
        {"min_bytes": 4096, "processing_base_seconds": 0.3, "seconds_per_mb": 20.0, "failure_rate": 0.05, "seed": 5},
    )
    env = pipeline_env(
        database_url=migrated_pg_url,
        broker_url=private_redis.url,
        sandbox_url=sandbox.url,
        home=tmp_path,
        extra=FAULT_ENV,
    )
    engine = make_engine(migrated_pg_url, connect_args={"application_name": OBSERVER})
    stack = FaultStack(env, Store(engine), migrated_pg_url, sandbox, private_redis, tmp_path, admin)
    try:
        yield stack
    finally:
        for worker in stack.workers:
            worker.kill()
        engine.dispose()
