"""Push a batch of invoices through the running stack and read what happened from the database.

Shared by the throughput, slow-provider, polling and soak benchmarks. Rates are computed from the
database's own timestamps (first `submitted_at` to last transition to `retrieved`), so the time
workers take to start and the poll loop of this process do not count.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import psutil

from bench.stack import Stack, log, wait_for
from models import FINAL, Job, Store, make_engine
from worker.samples import native_xml


def producer_store(st: Stack) -> Store:
    """A store for this (producer) process, pointed at the run's database and broker."""
    st.apply_env()
    from providers import reset_providers

    reset_providers()
    return Store(
        make_engine(
            st.database_url, pool_size=2, max_overflow=2, pool_pre_ping=not __import__("os").environ.get("NOPING")
        )
    )


def load(
    store: Store,
    count: int,
    *,
    prefix: str,
    size: Callable[[int], int] = lambda _: 2048,
    publish: bool = True,
) -> list[str]:
    """Enqueue `count` invoices through the producer API; returns the job ids."""
    from worker.producer import enqueue

    ids = []
    for n in range(count):
        internal_id = f"{prefix}-{n:06d}"
        result = enqueue(store, native_xml(internal_id, size(n), folio=n + 1), internal_id)
        if result.state != "queued":
            raise RuntimeError(f"{internal_id} was not accepted: {result.job.error_message}")
        ids.append(result.job.id)
    return ids


def states(store: Store) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, state, n in store.stats.count_by_state():
        counts[state] = counts.get(state, 0) + n
    return counts


def wait_final(store: Store, count: int, timeout: float, on_tick: Callable[[], None] | None = None) -> None:
    last_report = [time.monotonic()]

    def done() -> bool:
        counts = states(store)
        if on_tick:
            on_tick()
        if time.monotonic() - last_report[0] > 15:
            last_report[0] = time.monotonic()
            log(f"  states: {counts}")
        return sum(n for s, n in counts.items() if s in FINAL) >= count

    wait_for(done, timeout, interval=0.25, what=f"{count} invoices in a final state")


@dataclass
class Timeline:
    """Per-job timestamps read back from the database after a run."""

    jobs: list[Job]

    @property
    def retrieved(self) -> list[Job]:
        return [j for j in self.jobs if j.state == "retrieved"]

    def span(self) -> tuple[datetime, datetime]:
        """First submit answered to last retrieved transition: the window the workers were busy."""
        start = min(j.submitted_at for j in self.jobs if j.submitted_at is not None)
        end = max(j.state_changed_at for j in self.retrieved)
        return start, end

    def rate(self) -> float:
        start, end = self.span()
        seconds = (end - start).total_seconds()
        return (len(self.retrieved) - 1) / seconds if seconds > 0 else float("nan")

    def polls(self) -> list[int]:
        return [j.polls for j in self.retrieved]


def timeline(store: Store) -> Timeline:
    return Timeline(store.jobs.list_jobs())


# ------------------------------------------------------------------------------ CPU accounting


def _cpu(proc: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        t = proc.cpu_times()
        return float(t.user + t.system)
    return 0.0


def _named(names: Iterable[str]) -> list[psutil.Process]:
    wanted = set(names)
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in wanted:
            found.append(proc)
    return found


@dataclass
class CpuMeter:
    """CPU seconds spent by each part of the stack between `start()` and `stop()`.

    PostgreSQL and Redis are shared with whoever else uses this machine, so their figures include
    other sessions' work; the system total shows how busy both cores were.
    """

    stack: Stack
    parts: dict[str, float] = field(default_factory=dict)
    _before: dict[str, float] = field(default_factory=dict)
    _wall: float = 0.0

    def _snapshot(self) -> dict[str, float]:
        sys_times = psutil.cpu_times()
        busy = sum(sys_times) - sys_times.idle - getattr(sys_times, "iowait", 0.0)
        return {
            "workers": self.stack.worker_cpu(),
            "sandbox": self.stack.sandbox.cpu_seconds(),
            "postgres": sum(_cpu(p) for p in _named(["postgres"])),
            "redis": sum(_cpu(p) for p in _named(["redis-server"])),
            "producer (this process)": _cpu(psutil.Process()),
            "system total": busy,
        }

    def start(self) -> None:
        self._before = self._snapshot()
        self._wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        wall = time.monotonic() - self._wall
        self.parts = {k: round(after[k] - self._before.get(k, 0.0), 2) for k in after}
        self.parts["wall"] = round(wall, 2)
        self.parts["cores busy (system)"] = round(self.parts["system total"] / wall, 2) if wall else 0.0
        return self.parts


def per_invoice_ms(parts: dict[str, float], invoices: int) -> dict[str, float]:
    return {
        k: round(1000 * v / invoices, 2)
        for k, v in parts.items()
        if k not in ("wall", "cores busy (system)") and invoices
    }


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def percentile(values: Iterable[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    index = min(len(data) - 1, max(0, round(q * (len(data) - 1))))
    return data[index]
