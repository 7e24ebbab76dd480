"""MSeller on its plan's budget: counted requests per document and documents per second.

    python -m bench.mseller_budget [--plans gratis,negocio,empresa] [--documents 200,1000,4000]
                                   [--processing 2.0] [--submitters 8]

For each plan the sandbox (its own process, as `einvoice sandbox` serves it) enforces the plan's
requests per second and per month, and takes `--processing` seconds to reach a final status. The
MSeller client is driven directly, as the pipeline will drive it: `--submitters` threads send the
documents, and one poller asks for every document whose processing time has passed, in batch calls
of up to 50 e-NCF (`verify_many`). All threads share one client, whose per-second bucket lives in
Redis as it does for a fleet of workers. Reported per plan: counted requests (the sandbox's own
count), requests per document, 429 answers, documents per second from the first send to the last
final status, and the request rate as a share of the plan's (the goal: at most 4 requests per
document and at least 90 % of the plan's speed).
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections import deque
from typing import Any

import httpx

from bench.stack import REDIS_URL, command_line, log, sandbox_process, table, write_result
from providers.base import ProviderError, VerifyStatus, add_request_observer
from providers.mseller import PLANS, InProcessBudget, MSellerClient, MSellerSettings
from providers.mseller.samples import encf, sample_ecf
from sandbox.mseller.config import DEFAULT_API_KEY, DEFAULT_EMAIL, DEFAULT_PASSWORD

BATCH = 50
# A poll of a document that was still pending is repeated after this long.
REPOLL_SECONDS = 1.0


def run_plan(
    base_url: str,
    plan: str,
    documents: int,
    processing: float,
    submitters: int,
    batch_wait: float,
    *,
    unlimited: bool = False,
) -> dict[str, Any]:
    """One plan's run; `unlimited` lifts the per-second limit on both sides to find the machine's ceiling."""
    admin = httpx.Client(base_url=f"{base_url}/mseller/_admin", timeout=30)
    admin.post("/reset").raise_for_status()
    knobs: dict[str, Any] = {"plan": plan, "processing_seconds": processing}
    if unlimited:
        knobs["rate_per_second"] = 0
    admin.post("/config", json=knobs).raise_for_status()
    settings = MSellerSettings(
        url=f"{base_url}/mseller",
        email=DEFAULT_EMAIL,
        password=DEFAULT_PASSWORD,
        api_key=DEFAULT_API_KEY,
        plan=plan,
        rate_per_second=0 if unlimited else None,
        rate_wait=60.0,
        redis_url=REDIS_URL,
        redis_prefix=f"bench-{uuid.uuid4().hex[:8]}",
    )
    client = MSellerClient(settings, budget=InProcessBudget(settings.requests_per_month))
    # Log in before the clock starts (logins are not counted and happen once an hour); the status
    # query that does it is left out of the figures.
    client.verify_many([encf(documents + 1)])
    time.sleep(1.0)  # and let the per-second buckets fill again
    baseline = admin.get("/counters").json()["totals"]
    stamps: list[float] = []
    add_request_observer(lambda provider, operation, outcome, seconds: stamps.append(time.monotonic()))

    work: deque[int] = deque(range(1, documents + 1))
    due: deque[tuple[float, str]] = deque()
    lock = threading.Lock()
    final: dict[str, str] = {}
    errors: list[str] = []
    submitted = threading.Event()
    batches = 0

    def submitter() -> None:
        while True:
            with lock:
                if not work:
                    return
                sequence = work.popleft()
            try:
                result = client.submit(sample_ecf(sequence), f"B-{sequence}")
            except ProviderError as exc:
                errors.append(f"submit {sequence}: {exc}")
                continue
            with lock:
                due.append((time.monotonic() + processing, result.request_id))

    def poller() -> None:
        nonlocal batches
        while len(final) + len(errors) < documents:
            now = time.monotonic()
            with lock:
                ready = [item for item in due if item[0] <= now]
                oldest = min((at for at, _ in ready), default=now)
                full = len(ready) >= BATCH or (ready and (submitted.is_set() or now - oldest >= batch_wait))
                batch = [e for _, e in ready[:BATCH]] if full else []
                for item in [item for item in due if item[1] in set(batch)]:
                    due.remove(item)
            if not batch:
                time.sleep(0.05)
                continue
            batches += 1
            try:
                results = client.verify_many(batch)
            except ProviderError as exc:
                errors.append(f"verify: {exc}")
                return
            for key, value in results.items():
                if isinstance(value, ProviderError) or value.status is VerifyStatus.PENDING:
                    with lock:
                        due.append((time.monotonic() + REPOLL_SECONDS, key))
                else:
                    final[key] = value.status.value

    started = time.monotonic()
    threads = [threading.Thread(target=submitter) for _ in range(submitters)]
    poll_thread = threading.Thread(target=poller)
    for thread in threads:
        thread.start()
    poll_thread.start()
    for thread in threads:
        thread.join()
    sent_at = time.monotonic()
    submit_seconds = sent_at - started
    submitted.set()
    poll_thread.join()
    elapsed = time.monotonic() - started
    after = admin.get("/counters").json()["totals"]
    totals = {key: int(after.get(key, 0)) - int(baseline.get(key, 0)) for key in after}
    client.close()
    counted = totals.get("counted", 0)
    while_sending = sum(1 for stamp in stamps if started <= stamp <= sent_at)
    rate = PLANS[plan].rate_per_second
    return {
        "plan": f"{plan} (no req/s limit)" if unlimited else plan,
        "rate_per_second": rate,
        "monthly_requests": settings.requests_per_month,
        "documents": documents,
        "final": len(final),
        "issued": sum(1 for status in final.values() if status == VerifyStatus.ISSUED.value),
        "errors": errors[:5],
        "error_count": len(errors),
        "counted_requests": counted,
        "sends": totals.get("sends", 0),
        "batch_calls": totals.get("status_batch", 0),
        "requests_per_document": counted / documents,
        "status_429_throttled": totals.get("status_429_throttled", 0),
        "status_429_monthly": totals.get("status_429_monthly", 0),
        "seconds": elapsed,
        "submit_seconds": submit_seconds,
        "documents_per_second": len(final) / elapsed,
        "requests_per_second": counted / elapsed,
        # While sends run the bucket is the only brake; the tail is the last processing wait.
        "requests_while_sending": while_sending,
        "share_of_plan_rate_while_sending": (while_sending / submit_seconds) / rate,
        "share_of_plan_rate": (counted / elapsed) / rate,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", default="gratis,negocio,empresa")
    parser.add_argument("--documents", default="200,1000,4000", help="documents per plan, in the same order")
    parser.add_argument("--processing", type=float, default=2.0, help="seconds the sandbox takes to a final status")
    parser.add_argument("--submitters", type=int, default=8)
    parser.add_argument(
        "--ceiling", action="store_true", help="also run the last plan without a per-second limit (machine ceiling)"
    )
    parser.add_argument(
        "--batch-wait", type=float, default=5.0, help="seconds a ready document may wait for its batch to fill"
    )
    args = parser.parse_args(argv)
    plans = [p.strip() for p in args.plans.split(",") if p.strip()]
    counts = [int(n) for n in args.documents.split(",")]
    if len(counts) != len(plans) or any(p not in PLANS for p in plans):
        parser.error("--plans must name known plans and --documents give one count per plan")
    rows = []
    with sandbox_process() as sandbox:
        for plan, documents in zip(plans, counts, strict=True):
            log(f"plan {plan}: {documents} documents")
            rows.append(run_plan(sandbox.url, plan, documents, args.processing, args.submitters, args.batch_wait))
        if args.ceiling:
            log(f"plan {plans[-1]} without a per-second limit: {counts[-1]} documents")
            rows.append(
                run_plan(
                    sandbox.url,
                    plans[-1],
                    counts[-1],
                    args.processing,
                    args.submitters,
                    args.batch_wait,
                    unlimited=True,
                )
            )
    print(
        table(
            ["plan", "req/s", "docs", "final", "counted", "req/doc", "429", "docs/s", "req/s used", "plan share"],
            [
                [
                    r["plan"],
                    r["rate_per_second"],
                    r["documents"],
                    r["final"],
                    r["counted_requests"],
                    r["requests_per_document"],
                    r["status_429_throttled"] + r["status_429_monthly"],
                    r["documents_per_second"],
                    r["requests_per_second"],
                    f"{r['share_of_plan_rate_while_sending']:.0%} / {r['share_of_plan_rate']:.0%}",
                ]
                for r in rows
            ],
        )
    )
    print("plan share: request rate while sending / over the whole run, against the plan's requests per second")
    report = {
        "command": command_line("bench.mseller_budget", argv),
        "processing_seconds": args.processing,
        "submitters": args.submitters,
        "batch_size": BATCH,
        "batch_wait_seconds": args.batch_wait,
        "plans": rows,
    }
    path = write_result("mseller_budget", report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
