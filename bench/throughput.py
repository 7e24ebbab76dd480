"""Benchmark 1, throughput: small invoices through submit, verify and retrieve, beside Celery's ceiling.

    python -m bench.throughput [--invoices 5000] [--noop 20000] [--runs 3] [--deployment NAME]

The sandbox runs the `bench` preset (no size minimum, no processing time, no latency) and the client
sends everything to the async service (`MYSUITE_ASYNC_MIN_BYTES=0`), so each invoice is one
submit, at least one verify and one retrieve (with its two downloads). In the same run, on the same
broker and with the same worker processes, a queue of no-op tasks is drained: that is Celery's own
ceiling on this machine, and R = 3 x invoices/s / no-op tasks/s says how much of it the pipeline
keeps (three tasks per invoice). Runs alternate invoice and no-op measurements so that the
machine's background load hits both alike.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import redis

from bench.noop import NAME as NOOP_TASK
from bench.noop import QUEUE as NOOP_QUEUE
from bench.pipeline_run import CpuMeter, load, median, per_invoice_ms, producer_store, states, timeline, wait_final
from bench.stack import (
    REDIS_URL,
    Sampler,
    Sandbox,
    WorkerSpec,
    command_line,
    log,
    queue_depth,
    sandbox_process,
    stack,
    table,
    write_result,
)

BENCH_ENV = {"MYSUITE_ASYNC_MIN_BYTES": "0"}

DEPLOYMENTS: dict[str, list[WorkerSpec]] = {
    # What the e2e tests and a small install run: one worker, every queue, two processes.
    "prefork-2": [WorkerSpec("all", pool="prefork", concurrency=2, beat=True)],
    "prefork-4": [WorkerSpec("all", pool="prefork", concurrency=4, beat=True)],
    # Separate workers per queue: uploads in processes, polling in threads.
    "split": [
        WorkerSpec("submit", pool="prefork", concurrency=2, queues=("submit",), beat=True),
        WorkerSpec("poll", pool="threads", concurrency=16, queues=("poll",)),
    ],
    "threads-16": [WorkerSpec("all", pool="threads", concurrency=16, beat=True)],
}


def run_invoices(
    sandbox: Sandbox,
    specs: list[WorkerSpec],
    count: int,
    timeout: float,
    prefix: str,
    *,
    knobs: dict[str, Any] | None = None,
    rss_every: float | None = None,
) -> dict[str, Any]:
    """Enqueue `count` small invoices, then start the workers and time them until all are final.

    With `rss_every`, the RSS of the worker process trees is sampled that often, together with
    the number of invoices retrieved so far (for the soak benchmark).
    """
    with stack(sandbox, BENCH_ENV) as st:
        sandbox.configure(**(knobs or {"preset": "bench"}))
        store = producer_store(st)
        started = time.monotonic()
        load(store, count, prefix=prefix)
        enqueue_seconds = time.monotonic() - started
        meter = CpuMeter(st)
        sandbox.inflight(reset=True)
        meter.start()
        for spec in specs:
            st.start_worker(spec)
        sampler = Sampler(lambda: (st.worker_rss(), states(store).get("retrieved", 0)), rss_every or 3600.0)
        with sampler:
            try:
                wait_final(store, count, timeout)
            except TimeoutError:
                log(st.worker_log_tail())
                raise
        cpu = meter.stop()
        inflight = sandbox.inflight()
        counters = sandbox.admin("counters")["transactions"]
        st.stop_workers()
        tl = timeline(store)
        store.engine.dispose()
    start, end = tl.span()
    return {
        "invoices": count,
        "retrieved": len(tl.retrieved),
        "invoices_per_s": tl.rate(),
        "busy_seconds": (end - start).total_seconds(),
        "wall_seconds_incl_worker_start": cpu["wall"],
        "mean_verify_calls": sum(tl.polls()) / max(1, len(tl.retrieved)),
        "enqueue_seconds": enqueue_seconds,
        "cpu_seconds": cpu,
        "cpu_ms_per_invoice": per_invoice_ms(cpu, count),
        "sandbox_calls": {k: v["calls"] for k, v in counters.items()},
        "sandbox_in_flight": inflight,
        "rss_samples": [(round(t, 1), rss, done) for t, (rss, done) in sampler.values] if rss_every else [],
    }


def run_noop(sandbox: Sandbox, specs: list[WorkerSpec], count: int, timeout: float) -> dict[str, Any]:
    from celery import current_app

    with stack(sandbox) as st:
        st.apply_env()
        import worker.app  # noqa: F401  (current app, same broker settings)

        for _ in range(count):
            current_app.send_task(NOOP_TASK, queue=NOOP_QUEUE)
        client = redis.Redis.from_url(REDIS_URL)
        noop_specs = [
            WorkerSpec(s.name, pool=s.pool, concurrency=s.concurrency, queues=(NOOP_QUEUE,), app="bench.noop")
            for s in specs
        ]
        meter = CpuMeter(st)
        meter.start()
        for spec in noop_specs:
            st.start_worker(spec)
        deadline = time.monotonic() + timeout
        first = last = None
        while time.monotonic() < deadline:
            depth = queue_depth(client, NOOP_QUEUE)
            now = time.monotonic()
            if first is None and depth < count:
                first = now
            if depth == 0:
                last = now
                break
            time.sleep(0.01)
        cpu = meter.stop()
        client.close()
    if first is None or last is None:
        raise TimeoutError("no-op queue did not drain")
    return {
        "tasks": count,
        "tasks_per_s": count / (last - first),
        "seconds": last - first,
        "cpu_seconds": cpu,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=5000)
    parser.add_argument("--noop", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deployment", default="prefork-2", choices=sorted(DEPLOYMENTS))
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    specs = DEPLOYMENTS[args.deployment]
    runs: list[dict[str, Any]] = []
    with sandbox_process("test") as sandbox:
        for run in range(args.runs):
            order = ("invoices", "noop") if run % 2 == 0 else ("noop", "invoices")
            result: dict[str, Any] = {"run": run + 1}
            for what in order:
                if what == "invoices":
                    log(f"run {run + 1}: {args.invoices} invoices ({args.deployment})")
                    result["pipeline"] = run_invoices(sandbox, specs, args.invoices, args.timeout, f"T{run}")
                else:
                    log(f"run {run + 1}: {args.noop} no-op tasks")
                    result["noop"] = run_noop(sandbox, specs, args.noop, args.timeout)
            result["R"] = 3 * result["pipeline"]["invoices_per_s"] / result["noop"]["tasks_per_s"]
            runs.append(result)
            log(
                f"run {run + 1}: {result['pipeline']['invoices_per_s']:.1f} invoices/s, "
                f"{result['noop']['tasks_per_s']:.0f} no-op/s, R={result['R']:.2f}"
            )
    summary: dict[str, Any] = {
        "invoices_per_s": median(r["pipeline"]["invoices_per_s"] for r in runs),
        "noop_tasks_per_s": median(r["noop"]["tasks_per_s"] for r in runs),
        "R": median(r["R"] for r in runs),
        "mean_verify_calls": median(r["pipeline"]["mean_verify_calls"] for r in runs),
        "cpu_ms_per_invoice": {
            k: median(r["pipeline"]["cpu_ms_per_invoice"][k] for r in runs)
            for k in runs[0]["pipeline"]["cpu_ms_per_invoice"]
        },
    }
    targets = {"invoices_per_s": 100.0, "R": 0.3}
    met = {k: summary[k] >= v for k, v in targets.items()}
    report = {
        "command": command_line("bench.throughput", argv),
        "deployment": [s.describe() for s in specs],
        "invoices": args.invoices,
        "noop_tasks": args.noop,
        "targets": targets,
        "met": met,
        "summary": summary,
        "runs": runs,
    }
    path = write_result("throughput", report)
    print(f"\nThroughput: {args.invoices} small invoices, {args.runs} runs (medians), deployment {args.deployment}")
    print(
        table(
            ["run", "invoices/s", "no-op tasks/s", "R", "verify calls/invoice"],
            [
                [
                    r["run"],
                    r["pipeline"]["invoices_per_s"],
                    r["noop"]["tasks_per_s"],
                    r["R"],
                    r["pipeline"]["mean_verify_calls"],
                ]
                for r in runs
            ]
            + [
                [
                    "median",
                    summary["invoices_per_s"],
                    summary["noop_tasks_per_s"],
                    summary["R"],
                    summary["mean_verify_calls"],
                ]
            ],
        )
    )
    print("CPU ms per invoice (median):", summary["cpu_ms_per_invoice"])
    print(
        f"targets: >= 100 invoices/s {'met' if met['invoices_per_s'] else 'NOT met'}; "
        f"R >= 0.3 {'met' if met['R'] else 'NOT met'}"
    )
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
