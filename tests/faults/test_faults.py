"""Nothing lost, nothing twice: the pipeline under worker kills, broker loss, database restarts and
a misbehaving provider, each over a batch of at least 200 invoices.

After each scenario every accepted invoice must be in a final state that matches what the sandbox
decided, the sandbox must have created at most one document per internal id (3196 duplicates are
fine once adopted), every job's history must be a valid path of the state machine, and work must
resume soon after the fault ends (the time is recorded and printed at the end of the run).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from functools import partial

import pytest
import sqlalchemy as sa
from celery import Celery

from tests.faults.conftest import OBSERVER, FaultStack, batch
from tests.harness import wait_until

pytestmark = pytest.mark.faults

# Generous bounds: recovery is expected within a couple of sweep intervals (1 s here) plus the
# redispatch grace (3 s) or, for work held by a killed worker, its lease (10 s) and the restart.
RECOVERY_BOUND = 30.0


def now() -> datetime:
    return datetime.now(UTC)


def test_worker_killed_mid_submit_and_mid_verify(fault_stack: FaultStack) -> None:
    """SIGKILL of the whole worker (pool and embedded beat) while it holds submits and verifies."""
    stack = fault_stack
    stack.admin("config", {"latency_ms": 120})  # every call takes a while: kills land mid-call
    docs: dict[str, bytes] = {}
    worker = stack.worker()
    recoveries = []
    kills = 0
    for round_ in range(3):
        part = batch(f"KILL{round_}", 70)
        docs.update(part)
        stack.submit(part, f"kill{round_}")
        for state in ("queued", "submitted"):
            wait_until(partial(stack.in_flight, state), timeout=180, interval=0.05, what=f"a {state} job in flight")
            worker.kill()
            kills += 1
            worker = stack.worker(f"w{kills}")
            restarted = now()
            recoveries.append(stack.progress_after(restarted))
    stack.wait_final(len(docs))
    stack.stop_workers()
    row = stack.record("worker SIGKILL", docs, max(recoveries), kills=kills)
    assert row["recovery_s"] < RECOVERY_BOUND


def test_redis_flushed_and_restarted(fault_stack: FaultStack) -> None:
    """Every message lost twice: the database is flushed, then the server dies and comes back empty."""
    stack = fault_stack
    # Every call takes a while, so that work is still in flight when Redis is flushed (without it the
    # first 90 invoices can all be final by then, and there is no progress left to see).
    stack.admin("config", {"latency_ms": 150})
    docs = batch("REDIS", 210)
    names = list(docs)
    first, second, third = (
        {k: docs[k] for k in names[:90]},
        {k: docs[k] for k in names[90:150]},
        {k: docs[k] for k in names[150:]},
    )
    stack.worker()
    stack.submit(first, "r1")
    wait_until(lambda: stack.counts().get("retrieved", 0) >= 10, timeout=60, what="some progress")
    assert not stack.all_final(len(first)), "work is left when Redis is flushed"
    stack.redis.flush()
    flushed = now()
    recovery_flush = stack.progress_after(flushed)
    stack.redis.kill()
    down = time.monotonic()
    stack.submit(second, "r2")  # the producer must not hang: the sweep sends these later
    assert time.monotonic() - down < 60
    time.sleep(2)
    stack.redis.start()
    restarted = now()
    recovery_restart = stack.progress_after(restarted)
    stack.submit(third, "r3")
    stack.wait_final(len(docs))
    assert all(worker.alive() for worker in stack.workers), "workers reconnect to Redis on their own"
    stack.stop_workers()
    row = stack.record(
        "redis flush+restart",
        docs,
        max(recovery_flush, recovery_restart),
        flush_recovery_s=round(recovery_flush, 1),
        restart_recovery_s=round(recovery_restart, 1),
    )
    assert row["recovery_s"] < RECOVERY_BOUND


def test_postgresql_connections_terminated(fault_stack: FaultStack) -> None:
    """What a PostgreSQL restart looks like to its clients, repeatedly, while the workers run."""
    stack = fault_stack
    stack.admin("config", {"latency_ms": 120})  # the work outlasts the faults: they land mid-step
    docs = batch("PG", 200)
    stack.worker()
    stack.submit(docs, "pg")
    name = stack.database_url.rsplit("/", 1)[1]
    terminated = 0
    recoveries = []
    for _ in range(5):
        time.sleep(1.5)
        with stack.store.engine.connect() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid() AND application_name <> :me"
                ),
                {"db": name, "me": OBSERVER},
            ).scalar_one()
        terminated += int(killed)
        if not stack.all_final(len(docs)):  # once everything is final there is no progress to see
            recoveries.append(stack.progress_after(now()))
    assert terminated >= 5, "the workers' connections were terminated"
    assert recoveries, "the connections were terminated while there was work left"
    stack.wait_final(len(docs))
    assert all(worker.alive() for worker in stack.workers), "workers reconnect on their own"
    stack.stop_workers()
    row = stack.record("postgres terminated", docs, max(recoveries), backends_terminated=terminated)
    assert row["recovery_s"] < RECOVERY_BOUND


def test_provider_outage_then_back(fault_stack: FaultStack) -> None:
    """Provider fully down: jobs wait (contingency, a few probes), then all go out when it returns."""
    stack = fault_stack
    docs = batch("OUT", 200)
    names = list(docs)
    before, during = {k: docs[k] for k in names[:140]}, {k: docs[k] for k in names[140:]}
    stack.worker()
    stack.submit(before, "o1")
    wait_until(lambda: stack.counts().get("retrieved", 0) >= 20, timeout=60, what="some progress")
    stack.admin("config", {"outage": True})
    outage_start = time.time()
    paused: list[str] = []

    def watch() -> None:
        while time.time() - outage_start < 10:
            pause = stack.store.pauses.provider_pause("mysuite")
            if pause is not None:
                paused.append(pause.kind)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    stack.submit(during, "o2")
    watcher.join()
    stack.admin("config", {"outage": False})
    outage_end = time.time()
    back = now()
    calls = stack.sandbox.calls.between(outage_start, outage_end)
    recovery = stack.progress_after(back)
    stack.wait_final(len(docs))
    stack.stop_workers()
    row = stack.record(
        "provider outage",
        docs,
        recovery,
        outage_s=round(outage_end - outage_start, 1),
        calls_during_outage=calls.total(),
        outage_calls=dict(calls),
    )
    assert "outage" in paused, "contingency mode was entered"
    # Without contingency every waiting job would retry on its own backoff: thousands of calls.
    assert calls.total() <= 80, calls
    assert row["recovery_s"] < RECOVERY_BOUND
    assert "contingency" in stack.worker_logs()


def test_flaky_provider(fault_stack: FaultStack) -> None:
    """About 20% of calls fail (HTTP 500, SOAP Fault, timeout, malformed XML) and 5% lose their answer
    after the effect; downloads fail the same way."""
    stack = fault_stack
    stack.env.update({"MYSUITE_READ_TIMEOUT": "0.5", "MYSUITE_UPLOAD_TIMEOUT": "0.5"})
    stack.admin(
        "config",
        {
            "http500_rate": 0.05,
            "soap_fault_rate": 0.05,
            "malformed_rate": 0.05,
            "drop_after_rate": 0.05,
            "faults_on_files": True,
        },
    )
    docs = batch("FLAKY", 200)
    stopping = threading.Event()
    slow_spells = []

    def slow_spells_loop() -> None:
        # Latency above the client's read timeout for a fraction of the time: those calls time out,
        # and the provider still carries them out afterwards.
        while not stopping.is_set():
            stack.admin("config", {"latency_ms": 900})
            slow_spells.append(time.time())
            stopping.wait(0.4)
            stack.admin("config", {"latency_ms": 0})
            stopping.wait(2.6)

    spells = threading.Thread(target=slow_spells_loop)
    stack.worker()
    spells.start()
    try:
        stack.submit(docs, "flaky")
        wait_until(lambda: stack.counts().get("retrieved", 0) >= 150, timeout=150, what="most documents through")
    finally:
        stopping.set()
        spells.join()
    counters = stack.admin("counters")
    stack.admin(
        "config",
        {"latency_ms": 0, "http500_rate": 0, "soap_fault_rate": 0, "malformed_rate": 0, "drop_after_rate": 0},
    )
    calm = now()
    active = sum(stack.counts().get(s, 0) for s in ("queued", "submitted", "issued"))
    recovery = stack.progress_after(calm) if active else 0.0
    stack.wait_final(len(docs), timeout=120)
    stack.stop_workers()
    faults = counters["totals"]["faults"]
    timed_out = sum(stack.sandbox.calls.between(t, t + 0.4).total() for t in slow_spells)
    row = stack.record(
        "flaky provider 20%",
        docs,
        recovery,
        calls=counters["totals"]["calls"],
        injected_faults=faults,
        calls_in_slow_spells=timed_out,
    )
    assert faults >= 100 and timed_out >= 5, "faults and timeouts were really injected"
    assert row["recovery_s"] < RECOVERY_BOUND


def test_duplicate_messages_and_racing_workers(fault_stack: FaultStack) -> None:
    """Every step's message delivered several times, consumed by two workers (two embedded beats)."""
    stack = fault_stack
    docs = batch("DUP", 200)
    publisher = Celery("duplicates", broker=stack.redis.url)
    # Submitted before any worker runs, so every submit message is duplicated whatever the speed.
    stack.submit(docs, "dup")
    steps = {
        "queued": ("einvoice.submit", "submit"),
        "submitted": ("einvoice.verify", "poll"),
        "issued": ("einvoice.retrieve", "poll"),
    }
    published = 0
    deadline = time.monotonic() + 120
    started = False
    while time.monotonic() < deadline:
        active = [job for job in stack.store.jobs.list_jobs() if job.state in steps]
        if not active:
            break
        for job in active:
            task, queue = steps[job.state]
            for _ in range(2):
                publisher.send_task(task, args=[job.id], queue=queue)
                published += 1
        if not started:
            stack.worker("wa", concurrency=4)
            stack.worker("wb", concurrency=4)
            started = True
        time.sleep(0.7)
    publisher.close()
    stack.wait_final(len(docs))
    stack.stop_workers()
    counters = stack.admin("counters")
    submits = [entry["calls"] for entry in counters["async"].values()]
    row = stack.record("duplicates+2 workers", docs, 0.0, duplicate_messages=published)
    assert published >= 2 * len(docs)
    assert max(submits) == 1, "no submit was ever sent twice for one internal id"
    assert row["duplicates"] == 0
