"""Webhook delivery lag: transitions at a steady rate, from the commit to the receiver's 2xx.

    python -m bench.webhook_lag [--rate 100] [--seconds 30] [--quick]

Each transition is a document refused on arrival (an `invoice.invalid` job, announced in the
transaction that creates it), produced here at `--rate` per second by four paced producer threads.
One Celery worker (threads, 8) with embedded beat runs the webhook sweep at its default interval
and posts every delivery to a receiver (a process of its own) that verifies the signature. Lag is
the receiver's arrival time minus the event time in the body (the commit of the transition).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.api_submit import API_SECRET, percentile
from bench.pipeline_run import producer_store
from bench.stack import ROOT, WorkerSpec, command_line, log, sandbox_process, stack, table, wait_for, write_result
from sandbox.server import free_port

PRODUCERS = 4


def serve_receiver(port: int, out: str) -> None:
    """The receiver, in a process of its own so that the producers never slow it down.

    Verifies each signature and appends the lag of each delivery to `out`, one line each.
    """
    import os

    import uvicorn

    hook = Webhook(os.environ["LAG_RECEIVER_SECRET"])
    sink = open(out, "a", buffering=1)  # noqa: SIM115 (kept open for the process's life)

    async def handle(request: Request) -> Response:
        body = await request.body()
        arrived = time.time()
        try:
            payload = hook.verify(body, dict(request.headers))
        except Exception:
            sink.write("bad\n")
            return Response(status_code=400)
        sink.write(f"{arrived - datetime.fromisoformat(payload['timestamp']).timestamp()}\n")
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", handle, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def read_lags(path: Path) -> tuple[list[float], int]:
    lines = path.read_text().split() if path.exists() else []
    return [float(x) for x in lines if x != "bad"], lines.count("bad")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="10 seconds")
    parser.add_argument("--receiver", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        serve_receiver(int(args.receiver[0]), args.receiver[1])
        return {}
    seconds = 10.0 if args.quick else args.seconds
    count = int(args.rate * seconds)
    extra = {"EINVOICE_API_SECRET": API_SECRET, "EINVOICE_WEBHOOK_ALLOW_PRIVATE": "1"}
    with sandbox_process("test") as sandbox, stack(sandbox, extra) as st:
        from worker.schema import upgrade

        upgrade(st.database_url)
        port = free_port()
        hook_url = f"http://127.0.0.1:{port}/hook"
        out = subprocess.run(
            [sys.executable, "-m", "worker.cli", "webhooks", "add", hook_url, "--events", "invoice.invalid"],
            env=st.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        lag_file = st.home / "lags.txt"
        receiver = subprocess.Popen(
            [sys.executable, "-m", "bench.webhook_lag", "--receiver", str(port), str(lag_file)],
            env={**st.env, "LAG_RECEIVER_SECRET": out.stdout.split(": ", 1)[1].strip()},
            cwd=ROOT,
        )
        st.start_worker(
            WorkerSpec("hooks", pool="threads", concurrency=8, beat=True, extra_args=("-I", "tasks.webhooks"))
        )
        from worker.producer import enqueue

        store = producer_store(st)
        time.sleep(5)  # the worker and its beat are up
        cpu_before = st.worker_cpu()
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
        try:
            wait_for(lambda: len(read_lags(lag_file)[0]) >= count, 180, what="every delivery")
            worker_cpu = st.worker_cpu() - cpu_before
        finally:
            receiver.terminate()
            receiver.wait(timeout=10)
        store.engine.dispose()
        lags, bad = read_lags(lag_file)
    summary = {
        "transitions": count,
        "achieved_rate": count / produced,
        "p50_s": statistics.median(lags),
        "p99_s": percentile(lags, 0.99),
        "max_s": max(lags),
        "bad_signatures": bad,
        "worker_cpu_ms_per_delivery": 1000 * worker_cpu / count,
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
            ["transitions", "rate/s", "p50 s", "p99 s", "max s", "worker CPU ms/delivery"],
            [
                [
                    count,
                    summary["achieved_rate"],
                    summary["p50_s"],
                    summary["p99_s"],
                    summary["max_s"],
                    summary["worker_cpu_ms_per_delivery"],
                ]
            ],
        )
    )
    print(f"target p99 < 2 s: {'met' if report['met'] else 'NOT met'}")
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
