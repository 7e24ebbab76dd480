"""Benchmark 5, enqueue: one producer process accepting 1 MB invoices in a loop.

    python -m bench.enqueue [--invoices 300] [--runs 3] [--mb 1]

`worker.producer.enqueue` is what an ERP integration calls: validate the document, store the job
row and the payload in one transaction, publish the job id after commit. No worker runs, so the
figure is the producer alone (PostgreSQL and Redis are the real servers). The documents are built
before the clock starts; each run uses a fresh database.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.pipeline_run import median, producer_store
from bench.stack import command_line, log, sandbox_process, stack, table, write_result
from worker.samples import native_xml

MIB = 1024 * 1024


def run_once(sandbox: Any, count: int, size: int, prefix: str) -> dict[str, Any]:
    from worker.producer import enqueue

    with stack(sandbox) as st:
        store = producer_store(st)
        documents = [(f"{prefix}-{n:05d}", native_xml(f"{prefix}-{n:05d}", size, folio=n + 1)) for n in range(count)]
        enqueue(store, native_xml(f"{prefix}-warm", size), f"{prefix}-warm")  # connections, parser, WSDL-free path
        cpu, started = time.process_time(), time.perf_counter()
        for internal_id, payload in documents:
            if enqueue(store, payload, internal_id).state != "queued":
                raise RuntimeError(f"{internal_id} not accepted")
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        store.engine.dispose()
    return {
        "invoices": count,
        "seconds": seconds,
        "invoices_per_s": count / seconds,
        "cpu_ms_per_invoice": 1000 * cpu / count,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=float, default=1.0)
    args = parser.parse_args(argv)
    size = int(args.mb * MIB)
    runs = []
    with sandbox_process("test") as sandbox:
        for run in range(args.runs):
            result = run_once(sandbox, args.invoices, size, f"E{run}")
            result["run"] = run + 1
            runs.append(result)
            log(f"run {run + 1}: {result['invoices_per_s']:.1f} invoices/s")
    summary = {
        "invoices_per_s": median(r["invoices_per_s"] for r in runs),
        "cpu_ms_per_invoice": median(r["cpu_ms_per_invoice"] for r in runs),
    }
    target = 50.0
    report = {
        "command": command_line("bench.enqueue", argv),
        "document_bytes": size,
        "target_invoices_per_s": target,
        "met": summary["invoices_per_s"] >= target,
        "summary": summary,
        "runs": runs,
    }
    path = write_result("enqueue", report)
    print(f"\nEnqueue: one producer process, {args.invoices} invoices of {args.mb:g} MiB per run")
    rows: list[list[Any]] = [[r["run"], r["invoices_per_s"], r["cpu_ms_per_invoice"]] for r in runs]
    rows.append(["median", summary["invoices_per_s"], summary["cpu_ms_per_invoice"]])
    print(table(["run", "invoices/s", "producer CPU ms/invoice"], rows))
    print(f"target >= {target:.0f} invoices/s: {'met' if report['met'] else 'NOT met'}")
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
