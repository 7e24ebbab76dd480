"""Benchmark: index one SAT package of 200,000 CFDI into PostgreSQL, streamed from the archive.

    python -m bench.cfdi_index [--cfdi 200000] [--runs 3] [--quick]

The package (a ZIP of 200,000 CFDI 4.0 XML files from the sandbox's seeded generator, about 170 MB)
is written once into a temporary folder. Each run starts a fresh interpreter, the stand-in for a
worker: it imports the code, opens its database connection, measures its resident memory (the
baseline), then indexes the package from disk with `tasks.cfdi_index.index_package` into an empty
`cfdi` table in one transaction, while a thread samples its RSS every 0.2 s (the memory curve kept
in the JSON). Reported: CFDI per second and the peak RSS above the baseline, median of the runs,
plus CFDI per CPU-second of the indexing process and the load average around each run, because on a
shared machine the wall-clock rate says as much about the neighbours as about the code.
Targets: at least 2,000 CFDI/s and at most 200 MB above the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.pipeline_run import median
from bench.stack import ROOT, command_line, log, pg_database, table, write_result

TARGET_CFDI_PER_S = 2000.0
TARGET_PEAK_MB = 200.0
SAMPLE_SECONDS = 0.2
SEED = 14


def child(url: str, package: Path) -> dict[str, Any]:
    """One run, in its own process: baseline, then the indexing with RSS sampled on a thread."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from models import make_engine
    from providers.mysuite.descarga import Direction
    from tasks.cfdi_index import index_package

    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE cfdi"))
    process = psutil.Process()
    baseline = process.memory_info().rss
    curve: list[tuple[float, float]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            curve.append((round(time.monotonic() - started, 2), round(process.memory_info().rss / 2**20, 1)))
            stop.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    cpu_before = sum(process.cpu_times()[:2])
    load_before = os.getloadavg()[0]
    sampler.start()
    with engine.begin() as connection:
        result = index_package(connection, package, Direction.RECEIVED, now=datetime.now(UTC))
    elapsed = time.monotonic() - started
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    stop.set()
    sampler.join()
    curve.append((round(elapsed, 2), round(process.memory_info().rss / 2**20, 1)))
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT count(*) FROM cfdi")).scalar_one()
    engine.dispose()
    peak = max(value for _, value in curve)
    return {
        "cfdi": result.records,
        "rows_in_table": rows,
        "skipped": result.skipped,
        "seconds": round(elapsed, 2),
        "cfdi_per_s": result.records / elapsed,
        "baseline_mb": round(baseline / 2**20, 1),
        "peak_mb": peak,
        "peak_above_baseline_mb": round(peak - baseline / 2**20, 1),
        "cpu_seconds": round(cpu, 2),
        "cfdi_per_cpu_s": result.records / cpu if cpu else None,
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "memory_curve_mb": curve,
    }


def make_package(folder: Path, count: int) -> Path:
    from sandbox.mysuite.cfdigen import sample_documents, write_package

    path = folder / f"package_{count}.zip"
    started = time.monotonic()
    write_package(path, sample_documents(SEED, count), "cfdi")
    log(
        f"package of {count} CFDI written in {time.monotonic() - started:.0f} s ({path.stat().st_size / 2**20:.0f} MiB)"
    )
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfdi", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 CFDI, one run")
    parser.add_argument("--child", nargs=2, metavar=("URL", "PACKAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return {}
    count, runs_wanted = (20_000, 1) if args.quick else (args.cfdi, args.runs)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cfdi-bench-") as folder, pg_database() as url:
        package = make_package(Path(folder), count)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for run in range(runs_wanted):
            log(f"run {run + 1}: indexing {count} CFDI")
            output = subprocess.run(
                [sys.executable, "-m", "bench.cfdi_index", "--child", url, str(package)],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(output.strip().splitlines()[-1])
            result["run"] = run + 1
            runs.append(result)
            above = result["peak_above_baseline_mb"]
            log(f"run {run + 1}: {result['cfdi_per_s']:.0f} CFDI/s, peak {above} MB above baseline")
        package_mib = round(package.stat().st_size / 2**20, 1)
    summary = {
        "cfdi_per_s": median(r["cfdi_per_s"] for r in runs),
        "peak_above_baseline_mb": median(r["peak_above_baseline_mb"] for r in runs),
        "seconds": median(r["seconds"] for r in runs),
        "cfdi_per_cpu_s": median(r["cfdi_per_cpu_s"] for r in runs),
    }
    report = {
        "command": command_line("bench.cfdi_index", argv),
        "cfdi": count,
        "package_mib": package_mib,
        "targets": {"cfdi_per_s": TARGET_CFDI_PER_S, "peak_above_baseline_mb": TARGET_PEAK_MB},
        "met": summary["cfdi_per_s"] >= TARGET_CFDI_PER_S and summary["peak_above_baseline_mb"] <= TARGET_PEAK_MB,
        "summary": summary,
        "runs": runs,
    }
    path = write_result("cfdi_index", report)
    print(f"\nCFDI indexing: one package of {count} CFDI ({package_mib} MiB) into PostgreSQL")
    median_row: list[Any] = ["median", summary["cfdi_per_s"], summary["seconds"], "", ""]
    median_row += [summary["peak_above_baseline_mb"], "", summary["cfdi_per_cpu_s"], ""]
    rows = [
        [
            r["run"],
            r["cfdi_per_s"],
            r["seconds"],
            r["baseline_mb"],
            r["peak_mb"],
            r["peak_above_baseline_mb"],
            r["cpu_seconds"],
            r["cfdi_per_cpu_s"],
            "->".join(str(x) for x in r["load_average"]),
        ]
        for r in runs
    ]
    headers = ["run", "CFDI/s", "seconds", "baseline MB", "peak MB", "above baseline MB", "CPU s", "CFDI/CPU s", "load"]
    print(table(headers, [*rows, median_row]))
    print(
        f"targets: >= {TARGET_CFDI_PER_S:.0f} CFDI/s, <= {TARGET_PEAK_MB:.0f} MB above baseline: "
        f"{'met' if report['met'] else 'NOT met'}\n{path}"
    )
    return report


if __name__ == "__main__":
    main()
