"""Webhook delivery lag: transitions at a steady rate, from the commit to the receiver's 2xx.

    python -m bench.webhook_lag [--rate 100] [--seconds 30] [--quick]

Each transition is a document refused on arrival (an `invoice.invalid` job, announced in the
transaction that creates it), produced here at `--rate` per second by four paced producer threads. One Celery worker (threads, 8)
with embedded beat runs the webhook sweep at its default interval and posts every delivery to a
receiver on this machine that verifies the signature. Lag is the receiver's arrival time minus the
event time in the body (the commit of the transition).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.api_submit import API_SECRET, percentile
from bench.pipeline_run import producer_store
from bench.stack import ROOT, WorkerSpec, command_line, log, sandbox_process, stack, table, wait_for, write_result
from sandbox.server import ServerThread

PRODUCERS = 4


class LagReceiver:
    def __init__(self) -> None:
        self.secret = ""
        self.lags: list[float] = []
        self.bad = 0
        self.lock = threading.Lock()

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        arrived = time.time()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except Exception:
            with self.lock:
                self.bad += 1
            return Response(status_code=400)
        occurred = datetime.fromisoformat(payload["timestamp"]).timestamp()
        with self.lock:
            self.lags.append(arrived - occurred)
        return Response(status_code=204)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="10 seconds")
    args = parser.parse_args(argv)
    seconds = 10.0 if args.quick else args.seconds
    count = int(args.rate * seconds)
    receiver = LagReceiver()
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    extra = {"EINVOICE_API_SECRET": API_SECRET, "EINVOICE_WEBHOOK_ALLOW_PRIVATE": "1"}
    with ServerThread(app) as hook, sandbox_process("test") as sandbox, stack(sandbox, extra) as st:
        from worker.schema import upgrade

        upgrade(st.database_url)
        out = subprocess.run(
            [sys.executable, "-m", "worker.cli", "webhooks", "add", f"{hook.url}/hook", "--events", "invoice.invalid"],
            env=st.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        receiver.secret = out.stdout.split(": ", 1)[1].strip()
        st.start_worker(
            WorkerSpec("hooks", pool="threads", concurrency=8, beat=True, extra_args=("-I", "tasks.webhooks"))
        )
        from worker.producer import enqueue

        store = producer_store(st)
        time.sleep(5)  # the worker and its beat are up
        started = time.monotonic()

        def produce(first: int) -> None:
            # Several producers keep the pace when one enqueue takes longer than 1/rate.
            for n in range(first, count, PRODUCERS):
                delay = started + n / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                enqueue(store, b"not a document", f"L-{n:06d}", publish=False)

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(PRODUCERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        produced = time.monotonic() - started
        log(f"{count} transitions in {produced:.1f}s")
        wait_for(lambda: len(receiver.lags) >= count, 120, what="every delivery")
        store.engine.dispose()
    lags = receiver.lags
    summary = {
        "transitions": count,
        "achieved_rate": count / produced,
        "p50_s": statistics.median(lags),
        "p99_s": percentile(lags, 0.99),
        "max_s": max(lags),
        "bad_signatures": receiver.bad,
    }
    report = {
        "command": command_line("bench.webhook_lag", argv),
        "rate": args.rate,
        "sweep_seconds": 1.0,
        "target_p99_s": 2.0,
        "met": summary["p99_s"] < 2.0,
        "summary": summary,
    }
    path = write_result("webhook_lag", report)
    print(f"\nWebhook delivery lag: {count} transitions at {args.rate:g}/s, one worker (threads, 8), sweep every 1 s")
    print(
        table(
            ["transitions", "rate/s", "p50 s", "p99 s", "max s"],
            [[count, summary["achieved_rate"], summary["p50_s"], summary["p99_s"], summary["max_s"]]],
        )
    )
    print(f"target p99 < 2 s: {'met' if report['met'] else 'NOT met'}")
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
