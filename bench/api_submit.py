"""HTTP submits through `einvoice api`: 5 KB documents from 16 concurrent clients, and one 40 MB document.

    python -m bench.api_submit [--invoices 2000] [--clients 16] [--big-mb 40] [--api-workers 2] [--quick]

The API runs as an operator would start it (`einvoice api --workers 2`, one server process per
core) against a fresh PostgreSQL database and Redis; no worker runs, so the figure is the HTTP edge plus the producer
(auth query, validation, job + payload + event in one transaction, audit row, publish). The 40 MB
document is posted in 1 MiB chunks while the API's RSS is sampled every 10 ms; the figure is the
peak above the RSS it had just before, against the document's size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil

from bench.stack import ROOT, Sampler, command_line, log, sandbox_process, stack, table, wait_for, write_result
from sandbox.server import free_port
from worker.samples import native_xml

MIB = 1024 * 1024
API_SECRET = "bench-server-secret-" + "b" * 40


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_api(env: dict[str, str], port: int, log_path: Any, workers: int = 1) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "api", "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=ROOT,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def live() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(live, 60, what="the API")
    return proc


def make_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "keys", "create", "--role", "submitter", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    key: str = json.loads(out.stdout)["key"]
    return key


def hammer(url: str, key: str, docs: list[tuple[str, bytes]], clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    cursor = iter(docs)
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {key}", "content-type": "application/xml"}) as http:
            while True:
                with lock:
                    item = next(cursor, None)
                if item is None:
                    return
                started = time.perf_counter()
                response = http.post(f"{url}/v1/invoices", params={"internal_id": item[0]}, content=item[1], timeout=60)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 201:
                        errors.append(f"{item[0]}: {response.status_code}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} submits failed, first: {errors[0]}")
    return seconds, latencies


def server_processes(pid: int) -> list[psutil.Process]:
    """The API's processes: uvicorn's supervisor and, with several workers, the servers it forked."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in processes))


def big_submit(url: str, key: str, pid: int, size: int) -> dict[str, Any]:
    """The document goes to whichever server process accepts it: each process's RSS is compared
    with its own baseline, and the largest growth is the figure."""
    document = native_xml("BIG-1", size)
    processes = server_processes(pid)
    time.sleep(1.0)
    baselines = [p.memory_info().rss for p in processes]

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(document), MIB):
            yield document[start : start + MIB]

    with Sampler(lambda: [p.memory_info().rss for p in processes], 0.01) as sampler:
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/v1/invoices",
            params={"internal_id": "BIG-1"},
            content=chunks(),
            headers={"Authorization": f"Bearer {key}", "content-type": "application/xml"},
            timeout=300,
        )
        seconds = time.perf_counter() - started
        time.sleep(0.3)
    if response.status_code != 201 or response.json()["state"] != "queued":
        raise RuntimeError(f"40 MB submit: {response.status_code} {response.text[:300]}")
    growth = [max(v[i] for _, v in sampler.values) - base for i, base in enumerate(baselines)]
    grown = max(range(len(baselines)), key=lambda i: growth[i])
    baseline, peak = baselines[grown], baselines[grown] + growth[grown]
    return {
        "document_bytes": len(document),
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "peak_over_baseline_bytes": peak - baseline,
        "ratio_to_document": (peak - baseline) / len(document),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--big-mb", type=float, default=40.0)
    parser.add_argument("--api-workers", type=int, default=2, help="`einvoice api --workers`: one per core")
    parser.add_argument("--quick", action="store_true", help="400 invoices")
    args = parser.parse_args(argv)
    count = 400 if args.quick else args.invoices
    docs = [(f"A-{n:05d}", native_xml(f"A-{n:05d}", 5 * 1024, folio=n + 1)) for n in range(count)]
    with sandbox_process("production") as sandbox, stack(sandbox) as st:
        env = {**st.env, "EINVOICE_API_SECRET": API_SECRET}
        from worker.schema import upgrade

        upgrade(st.database_url)
        port = free_port()
        api = start_api(env, port, st.home / "api.log", args.api_workers)
        try:
            url = f"http://127.0.0.1:{port}"
            key = make_key(env)
            hammer(url, key, [(f"W-{n}", native_xml(f"W-{n}", 5 * 1024)) for n in range(64)], args.clients)
            servers = server_processes(api.pid)
            cpu_before = cpu_seconds(servers)
            seconds, latencies = hammer(url, key, docs, args.clients)
            cpu = cpu_seconds(servers) - cpu_before
            log(f"{count} submits in {seconds:.1f}s")
            big = big_submit(url, key, api.pid, int(args.big_mb * MIB * 0.97))
        finally:
            api.terminate()
            api.wait(timeout=30)
    rate = count / seconds
    summary = {
        "submits_per_s": rate,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies),
        "api_cpu_ms_per_submit": 1000 * cpu / count,
        "big_document_peak_ratio": big["ratio_to_document"],
    }
    report = {
        "command": command_line("bench.api_submit", argv),
        "invoices": count,
        "clients": args.clients,
        "api_workers": args.api_workers,
        "document_bytes": len(docs[0][1]),
        "targets": {"submits_per_s": 300, "big_document_peak_ratio": 1.5},
        "met": {"submits_per_s": rate >= 300, "big_document_peak_ratio": big["ratio_to_document"] <= 1.5},
        "summary": summary,
        "big_document": big,
    }
    path = write_result("api_submit", report)
    print(
        f"\nHTTP submits: {count} documents of 5 KiB, {args.clients} concurrent clients, "
        f"`einvoice api --workers {args.api_workers}`"
    )
    print(
        table(
            ["submits/s", "p50 ms", "p99 ms", "max ms", "API CPU ms/submit"],
            [[rate, summary["p50_ms"], summary["p99_ms"], summary["max_ms"], summary["api_cpu_ms_per_submit"]]],
        )
    )
    print(f"\nOne {big['document_bytes'] / MIB:.0f} MiB submit, API RSS sampled every 10 ms")
    print(
        table(
            ["baseline MiB", "peak MiB", "peak - baseline MiB", "x document", "seconds"],
            [
                [
                    big["baseline_rss_bytes"] / MIB,
                    big["peak_rss_bytes"] / MIB,
                    big["peak_over_baseline_bytes"] / MIB,
                    big["ratio_to_document"],
                    big["seconds"],
                ]
            ],
        )
    )
    print(f"targets: >= 300 submits/s {'met' if report['met']['submits_per_s'] else 'NOT met'}; ", end="")
    print(f"peak <= 1.5x document {'met' if report['met']['big_document_peak_ratio'] else 'NOT met'}")
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
