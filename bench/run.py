"""Run every benchmark (or the named ones): `python -m bench.run [--quick] [NAMES...]`.

Each benchmark runs in a process of its own (a fresh interpreter: no state, connection or import
carried from one to the next), prints its table and writes `bench/results/<name>.json`. `--quick`
runs smaller versions that finish in a few minutes and writes its JSON under the system's temporary
folder (`einvoice-bench-quick`), so the full run's figures (those in BENCHMARKS.md) stay in place.
Needs PostgreSQL and Redis as the tests do (`BENCH_DATABASE_URL`, `BENCH_REDIS_URL`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One row per benchmark, so that the full and the quick plan cannot list different benchmarks.
BENCHMARKS: dict[str, tuple[str, str, str]] = {
    # name: (module, arguments of the full run, arguments of the quick run)
    "steps": ("bench.steps", "--invoices 1000", "--invoices 200"),
    "http_client": ("bench.http_client", "--requests 400 --rounds 7", "--requests 100 --rounds 3"),
    "throughput": ("bench.throughput", "--invoices 5000 --noop 20000 --runs 3", "--invoices 600 --noop 4000 --runs 1"),
    "slow_provider": ("bench.slow_provider", "--invoices 2000 --runs 1", "--invoices 400 --runs 1"),
    "large_document": ("bench.mysuite_submit_40mb", "--runs 3", "--runs 1"),
    "polling": ("bench.polling", "--documents 24 --max-mb 40 --every 2.5", "--documents 10 --max-mb 12 --every 1.5"),
    "enqueue": ("bench.enqueue", "--invoices 300 --runs 3", "--invoices 100 --runs 1"),
    "soak": ("bench.soak", "--invoices 20000", "--invoices 1500"),
    "mseller_budget": (
        "bench.mseller_budget",
        "--plans gratis,negocio,empresa --documents 200,1000,4000 --ceiling",
        "--plans gratis,negocio,empresa --documents 40,200,600",
    ),
    "cfdi_index": ("bench.cfdi_index", "--cfdi 200000 --runs 3", "--quick"),
    "mseller_pipeline": (
        "bench.mseller_pipeline",
        "--plans gratis,negocio,empresa --documents 200,400,400",
        "--plans gratis --documents 50",
    ),
    "api_submit": ("bench.api_submit", "--invoices 2000", "--quick"),
    "webhook_lag": ("bench.webhook_lag", "--rate 100 --seconds 30", "--quick"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, a few minutes in all")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}")
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.quick:
        env["BENCH_RESULTS_DIR"] = str(Path(tempfile.gettempdir()) / "einvoice-bench-quick")
    failed = []
    for name in args.names or list(BENCHMARKS):
        module, full, quick = BENCHMARKS[name]
        command = [sys.executable, "-m", module, *(quick if args.quick else full).split()]
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        # A group of its own, so that an interrupted benchmark takes its workers and sandbox along.
        proc = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait()
            raise
        print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f}s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
