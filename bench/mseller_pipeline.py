"""MSeller through the whole pipeline: counted requests per document, 429s and documents per second.

    python -m bench.mseller_pipeline [--plans gratis,negocio,empresa] [--documents 200,400,400]
                                     [--processing 2.0] [--workers 2] [--concurrency 8]
                                     [--sweep-interval 1.0] [--quick]

Unlike `bench.mseller_budget`, which drives the client directly, this runs what production runs:
documents go in through the producer API, Celery workers (`--workers` processes of `--concurrency`
threads, the first with beat) send them and poll, and the polls wait for the sweep, which groups
the due e-NCF into batch status calls. Each plan gets a fresh database and its own limiter keys in
Redis; the sandbox (its own process) enforces the plan and takes `--processing` seconds to a final
status. Reported per plan: counted requests (the sandbox's own count; the database's monthly count
must match it), requests per document, 429 answers, batch calls and e-NCF per batch call, documents
per second from the first send to the last final status, and the request rate as a share of the
plan's requests per second while documents were being sent.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.pipeline_run import producer_store, states, timeline, wait_final
from bench.stack import WorkerSpec, command_line, log, sandbox_process, stack, table, write_result
from models.usage import DatabaseUsage
from providers.mseller import PLANS
from providers.mseller.budget import month_of
from providers.mseller.samples import sample_ecf
from sandbox.mseller.config import DEFAULT_API_KEY, DEFAULT_EMAIL, DEFAULT_PASSWORD


def run_plan(
    sandbox: Any, plan: str, documents: int, processing: float, workers: int, concurrency: int, sweep: float
) -> dict[str, Any]:
    admin = httpx.Client(base_url=f"{sandbox.url}/mseller/_admin", timeout=30)
    admin.post("/reset").raise_for_status()
    admin.post("/config", json={"plan": plan, "processing_seconds": processing}).raise_for_status()
    env = {
        "MSELLER_URL": f"{sandbox.url}/mseller",
        "MSELLER_EMAIL": DEFAULT_EMAIL,
        "MSELLER_PASSWORD": DEFAULT_PASSWORD,
        "MSELLER_API_KEY": DEFAULT_API_KEY,
        "MSELLER_PLAN": plan,
        # Fresh limiter and token keys: a previous run's bucket must not slow this one.
        "MSELLER_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "EINVOICE_SWEEP_INTERVAL_SECONDS": str(sweep),
    }
    with stack(sandbox, env) as st:
        store = producer_store(st)
        from worker.producer import enqueue

        for n in range(workers):
            st.start_worker(WorkerSpec(f"ms{n}", pool="threads", concurrency=concurrency, beat=n == 0))
        time.sleep(3.0)  # workers up before the clock starts
        started = time.monotonic()
        for n in range(1, documents + 1):
            result = enqueue(store, sample_ecf(n), f"DO-{n:06d}", provider="mseller")
            if result.state != "queued":
                raise RuntimeError(f"DO-{n:06d} was not accepted: {result.job.error_message}")
        wait_final(store, documents, timeout=60 + documents * 2.0)
        wall = time.monotonic() - started
        counts = states(store)
        line = timeline(store)
        first, last = line.span()
        span = (last - first).total_seconds()
        sends_done = max(j.submitted_at for j in line.jobs if j.submitted_at is not None)
        sending = max((sends_done - first).total_seconds(), 1e-9)
        used = DatabaseUsage(store.engine).used("mseller", month_of(datetime.now(UTC)))
        store.engine.dispose()
    totals: dict[str, int] = admin.get("/counters").json()["totals"]
    admin.close()
    counted = totals.get("counted", 0)
    rate = PLANS[plan].rate_per_second
    batches = totals.get("status_batch", 0)
    return {
        "plan": plan,
        "rate_per_second": rate,
        "documents": documents,
        "retrieved": counts.get("retrieved", 0),
        "final": sum(n for s, n in counts.items() if s in ("retrieved", "failed", "invalid", "expired")),
        "counted_requests": counted,
        "database_count": used,
        "requests_per_document": counted / documents,
        "sends": totals.get("sends", 0),
        "duplicates": totals.get("duplicates", 0),
        "batch_calls": batches,
        "ecf_per_batch_call": totals.get("batch_ecfs", 0) / batches if batches else 0.0,
        "single_status_calls": totals.get("status_single", 0),
        "logins": totals.get("logins", 0),
        "status_429_throttled": totals.get("status_429_throttled", 0),
        "status_429_monthly": totals.get("status_429_monthly", 0),
        "seconds": span,
        "wall_seconds": wall,
        "documents_per_second": documents / span if span > 0 else float("nan"),
        "share_of_plan_rate_while_sending": (totals.get("sends", 0) / sending) / rate,
        "share_of_plan_rate": (counted / span) / rate if span > 0 else float("nan"),
        "plan_documents_per_second": rate / (counted / documents) if counted else float("nan"),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", default="gratis,negocio,empresa")
    parser.add_argument("--documents", default="200,400,400", help="documents per plan, in the same order")
    parser.add_argument("--processing", type=float, default=2.0, help="seconds the sandbox takes to a final status")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (threads pool)")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker")
    parser.add_argument("--sweep-interval", type=float, default=1.0, help="EINVOICE_SWEEP_INTERVAL_SECONDS")
    parser.add_argument("--quick", action="store_true", help="the free plan only, 50 documents")
    args = parser.parse_args(argv)
    if args.quick:
        args.plans, args.documents = "gratis", "50"
    plans = [p.strip() for p in args.plans.split(",") if p.strip()]
    counts = [int(n) for n in args.documents.split(",")]
    if len(counts) != len(plans) or any(p not in PLANS for p in plans):
        parser.error("--plans must name known plans and --documents give one count per plan")
    rows = []
    with sandbox_process() as sandbox:
        for plan, documents in zip(plans, counts, strict=True):
            log(f"plan {plan}: {documents} documents through {args.workers} workers")
            rows.append(
                run_plan(sandbox, plan, documents, args.processing, args.workers, args.concurrency, args.sweep_interval)
            )
    print(
        table(
            [
                "plan",
                "req/s",
                "docs",
                "retrieved",
                "counted",
                "req/doc",
                "429",
                "e-NCF/batch",
                "docs/s",
                "plan docs/s",
                "send share",
            ],
            [
                [
                    r["plan"],
                    r["rate_per_second"],
                    r["documents"],
                    r["retrieved"],
                    r["counted_requests"],
                    r["requests_per_document"],
                    r["status_429_throttled"] + r["status_429_monthly"],
                    r["ecf_per_batch_call"],
                    r["documents_per_second"],
                    r["plan_documents_per_second"],
                    f"{r['share_of_plan_rate_while_sending']:.0%}",
                ]
                for r in rows
            ],
        )
    )
    print(
        "plan docs/s: the plan's requests per second over the requests per document measured; "
        "send share: sends per second while sending, against the plan's requests per second"
    )
    report = {
        "command": command_line("bench.mseller_pipeline", argv),
        "processing_seconds": args.processing,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "sweep_interval_seconds": args.sweep_interval,
        "plans": rows,
    }
    path = write_result("mseller_pipeline", report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
