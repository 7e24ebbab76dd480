"""Where one invoice's CPU time goes inside a worker, step by step, without Celery around it.

    python -m bench.steps [--invoices 500]

Runs the task functions (`submit`, `verify`, `retrieve`) directly in this process, one invoice
after the other, against the same servers as the throughput benchmark (sandbox `bench` preset in
its own process, PostgreSQL, Redis for the messages the steps publish). Each call into a layer is
timed with this thread's CPU clock, exclusive of the layers it calls in turn, so the categories add
up: database (the store), SOAP envelope building, SOAP parsing, HTTP client (httpx, sockets),
downloads, archive files, broker publishing, and the task code itself. Celery's own share is what
the throughput benchmark's worker CPU per invoice adds on top of this total.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.pipeline_run import load, producer_store
from bench.stack import command_line, log, sandbox_process, stack, table, write_result

BENCH_ENV = {"MYSUITE_ASYNC_MIN_BYTES": "0"}


class Clock:
    """Exclusive CPU time per category: a nested category's time is subtracted from its caller's."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()

    def wrap(self, category: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = getattr(self._local, "stack", None)
            if stack is None:
                stack = self._local.stack = []
            stack.append(0.0)
            started = time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - started
                nested = stack.pop()
                self.cpu[category] += elapsed - nested
                self.calls[category] += 1
                if stack:
                    stack[-1] += elapsed

        return timed

    def patch(self, category: str, owner: Any, name: str) -> None:
        setattr(owner, name, self.wrap(category, getattr(owner, name)))


def instrument(clock: Clock) -> None:
    from models.jobs import Jobs
    from models.pauses import Pauses
    from models.schedule import Schedule
    from models.stats import Stats
    from models.steps import Steps
    from providers.mysuite import client, parsing, soap
    from tasks import archive, context, runner

    detail = __import__("os").environ.get("BENCH_STEPS_DETAIL")
    for part in (Jobs, Steps, Schedule, Pauses, Stats):
        for name, _member in inspect.getmembers(part, inspect.isfunction):
            if not name.startswith("__"):
                clock.patch(f"db {part.__name__}.{name}" if detail else "database (store)", part, name)
    clock.patch("SOAP build (zeep + lxml)", soap.EnvelopeBuilder, "build")
    for name in ("interpret_http_answer", "parse_verify", "parse_links", "parse_request_id", "document_ids"):
        clock.patch("SOAP parse", client, name)
        clock.patch("SOAP parse", parsing, name)
    clock.patch("HTTP client (httpx)", client.MySuiteClient, "_exchange")
    clock.patch("downloads (httpx + file)", client.MySuiteClient, "_download_once")
    clock.patch("archive bookkeeping", archive, "download")
    clock.patch("archive bookkeeping", archive, "write_bytes")
    clock.patch("broker publish (kombu)", context, "celery_dispatch")
    clock.patch("task code", runner, "run_step")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=500)
    args = parser.parse_args(argv)
    with sandbox_process("test") as sandbox, stack(sandbox, BENCH_ENV) as st:
        sandbox.configure(preset="bench")
        store = producer_store(st)
        ids = load(store, args.invoices, prefix="S", publish=False)
        from providers import get_provider
        from tasks import context, runner
        from tasks.services import Services
        from tasks.workflows import INVOICE

        clock = Clock()
        instrument(clock)
        # Messages go to the broker as in a worker (the publish is measured) but nobody consumes
        # them: this loop runs each step itself, one invoice after the other.
        services = Services(store, context.policy(), get_provider, context.celery_dispatch)
        wall: dict[str, float] = defaultdict(float)
        cpu: dict[str, float] = defaultdict(float)
        log(f"running {len(ids)} invoices step by step in-process")
        for job_id in ids:
            for spec in INVOICE.steps[:3]:
                w, c = time.perf_counter(), time.thread_time()
                outcome = runner.run_step(services, spec, [job_id]).get(job_id)
                wall[spec.name] += time.perf_counter() - w
                cpu[spec.name] += time.thread_time() - c
                if outcome == "poll":
                    raise RuntimeError("bench preset should answer at once")
                if outcome == "retrieved":
                    break  # the verify step retrieved the files itself
        done = sum(1 for j in store.jobs.list_jobs() if j.state == "retrieved")
        store.engine.dispose()
    n = args.invoices
    categories = {k: 1000 * v / n for k, v in sorted(clock.cpu.items(), key=lambda kv: -kv[1])}
    total_cpu = 1000 * sum(cpu.values()) / n
    report = {
        "command": command_line("bench.steps", argv),
        "invoices": n,
        "retrieved": done,
        "cpu_ms_per_invoice_by_layer": categories,
        "calls_per_invoice_by_layer": {k: clock.calls[k] / n for k in categories},
        "cpu_ms_per_invoice_total": total_cpu,
        "cpu_ms_per_step": {k: 1000 * v / n for k, v in cpu.items()},
        "wall_ms_per_step": {k: 1000 * v / n for k, v in wall.items()},
    }
    path = write_result("steps", report)
    print(f"\nWhere a worker's CPU goes per invoice, steps run in-process ({n} invoices, {done} retrieved)")
    rows: list[list[Any]] = [[k, v, report["calls_per_invoice_by_layer"][k]] for k, v in categories.items()]
    rows.append(["total (thread CPU of the three steps)", total_cpu, ""])
    print(table(["layer", "CPU ms/invoice", "calls/invoice"], rows))
    print(
        table(
            ["step", "CPU ms", "wall ms"],
            [[k, report["cpu_ms_per_step"][k], report["wall_ms_per_step"][k]] for k in cpu],
        )
    )
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
