"""Benchmark 2, slow provider: 200 ms added to every sandbox call, and how many calls are in flight.

    python -m bench.slow_provider [--invoices 2000] [--runs 1] [--deployment io-threads]

Everything as in the throughput benchmark (small invoices, async path, no processing time), but the
sandbox waits `latency_ms` = 200 before answering each SOAP call. Throughput then depends on how
many calls the workers keep in flight, which the sandbox process measures itself: the highest
number of requests it was serving at once, and the time-averaged number (the integral of the
in-flight count over the run, divided by its length).
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.pipeline_run import median
from bench.stack import WorkerSpec, command_line, log, sandbox_process, table, write_result
from bench.throughput import run_invoices

LATENCY_MS = 200
KNOBS = {"preset": "bench", "latency_ms": LATENCY_MS}

DEPLOYMENTS: dict[str, list[WorkerSpec]] = {
    # I/O-bound steps in thread pools: each waiting call costs a thread, not a process. Two poll
    # workers so that the Python work of verify and retrieve can use both cores (one GIL each).
    "io-threads": [
        WorkerSpec("submit", pool="threads", concurrency=32, queues=("submit",), beat=True),
        WorkerSpec("poll1", pool="threads", concurrency=64, queues=("poll",)),
        WorkerSpec("poll2", pool="threads", concurrency=64, queues=("poll",)),
    ],
    # For comparison: the throughput deployment, two processes, two calls in flight at most.
    "prefork-2": [WorkerSpec("all", pool="prefork", concurrency=2, beat=True)],
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--deployment", default="io-threads", choices=sorted(DEPLOYMENTS))
    parser.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args(argv)
    specs = DEPLOYMENTS[args.deployment]
    runs = []
    with sandbox_process("test") as sandbox:
        for run in range(args.runs):
            log(f"run {run + 1}: {args.invoices} invoices, {LATENCY_MS} ms per call ({args.deployment})")
            result = run_invoices(sandbox, specs, args.invoices, args.timeout, f"L{run}", knobs=KNOBS)
            result["run"] = run + 1
            runs.append(result)
            log(
                f"run {run + 1}: {result['invoices_per_s']:.1f} invoices/s, "
                f"{result['sandbox_in_flight']['mean_in_flight']:.1f} calls in flight on average"
            )
    summary = {
        "invoices_per_s": median(r["invoices_per_s"] for r in runs),
        "mean_in_flight": median(r["sandbox_in_flight"]["mean_in_flight"] for r in runs),
        "peak_in_flight": median(r["sandbox_in_flight"]["peak"] for r in runs),
        "mean_verify_calls": median(r["mean_verify_calls"] for r in runs),
    }
    target = 50.0
    report = {
        "command": command_line("bench.slow_provider", argv),
        "latency_ms": LATENCY_MS,
        "deployment": [s.describe() for s in specs],
        "invoices": args.invoices,
        "target_invoices_per_s": target,
        "met": summary["invoices_per_s"] >= target,
        "summary": summary,
        "runs": runs,
    }
    path = write_result("slow_provider", report)
    print(f"\nSlow provider ({LATENCY_MS} ms per call): {args.invoices} invoices, deployment {args.deployment}")
    print(
        table(
            ["run", "invoices/s", "calls in flight (mean)", "in flight (peak)", "sandbox calls", "CPU ms/invoice"],
            [
                [
                    r["run"],
                    r["invoices_per_s"],
                    r["sandbox_in_flight"]["mean_in_flight"],
                    r["sandbox_in_flight"]["peak"],
                    r["sandbox_in_flight"]["requests"],
                    r["cpu_ms_per_invoice"]["system total"],
                ]
                for r in runs
            ],
        )
    )
    print(f"target >= {target:.0f} invoices/s: {'met' if report['met'] else 'NOT met'}")
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
