"""Benchmark 6, soak: many invoices in a row; worker memory must not grow after warm-up.

    python -m bench.soak [--invoices 20000] [--deployment prefork-2]

Same stack and settings as the throughput benchmark (sandbox `bench` preset). While the workers
run, this process samples the RSS of every worker process tree (main process plus pool children)
once a second along with the number of invoices retrieved so far. Warm-up is the first 10% of the
invoices; growth compares the mean RSS over the last 10% of the run with the mean RSS just after
warm-up (the 10%-20% window), so one sample caught mid-allocation does not decide the verdict.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.pipeline_run import median
from bench.stack import command_line, log, sandbox_process, table, write_result
from bench.throughput import DEPLOYMENTS, run_invoices

MIB = 1024 * 1024


def window(samples: list[tuple[float, int, int]], total: int, low: float, high: float) -> list[int]:
    return [rss for _, rss, done in samples if low * total <= done < high * total] or [
        rss for _, rss, done in samples if done >= low * total
    ][:1]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=20000)
    parser.add_argument("--deployment", default="prefork-2", choices=sorted(DEPLOYMENTS))
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    specs = DEPLOYMENTS[args.deployment]
    with sandbox_process("test") as sandbox:
        log(f"soak: {args.invoices} invoices ({args.deployment})")
        result = run_invoices(sandbox, specs, args.invoices, args.timeout, "K", rss_every=1.0)
    samples = [(t, rss, done) for t, rss, done in result["rss_samples"] if rss > 0]
    n = args.invoices
    after_warmup = median(window(samples, n, 0.10, 0.20))
    at_end = median(window(samples, n, 0.90, 1.01))
    growth = (at_end - after_warmup) / after_warmup
    summary = {
        "invoices": n,
        "retrieved": result["retrieved"],
        "invoices_per_s": result["invoices_per_s"],
        "rss_after_warmup_mib": after_warmup / MIB,
        "rss_at_end_mib": at_end / MIB,
        "rss_max_mib": max(rss for _, rss, _ in samples) / MIB,
        "growth": growth,
    }
    report = {
        "command": command_line("bench.soak", argv),
        "deployment": [s.describe() for s in specs],
        "target_growth": 0.10,
        "met": growth <= 0.10 and result["retrieved"] == n,
        "summary": summary,
        "rss_samples": [(t, rss // 1024, done) for t, rss, done in samples],
        "pipeline": {k: v for k, v in result.items() if k != "rss_samples"},
    }
    path = write_result("soak", report)
    print(f"\nSoak: {n} invoices in a row, worker RSS (all worker processes) sampled every second")
    print(
        table(
            ["invoices", "retrieved", "invoices/s", "RSS after warm-up MiB", "RSS at end MiB", "max MiB", "growth"],
            [
                [
                    n,
                    summary["retrieved"],
                    summary["invoices_per_s"],
                    summary["rss_after_warmup_mib"],
                    summary["rss_at_end_mib"],
                    summary["rss_max_mib"],
                    f"{100 * growth:+.1f}%",
                ]
            ],
        )
    )
    print(f"target: growth <= 10% after warm-up: {'met' if report['met'] else 'NOT met'}")
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
