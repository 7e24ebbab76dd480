"""The HTTP layer of a MYSuite call, `httpx.Client` beside `providers.http.Wire`, in one run.

    python -m bench.http_client [--requests 400] [--rounds 7]

Each request pair is what the hot path sends most: a status envelope POSTed to the sandbox's async
service (its answer read whole) and a download link GET (its body streamed). The two clients take
turns, round after round, against the same sandbox process (`bench` preset), so the machine's
background load hits both alike. This thread's CPU per pair is reported as medians and as the
ratio Wire / Client. The sandbox runs in its own process, so its CPU is not counted.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx

from bench.stack import command_line, log, sandbox_process, table, write_result
from providers.http import Wire, read_capped, timeout
from providers.mysuite.client import MAX_ANSWER_BYTES, MySuiteClient
from providers.mysuite.config import MySuiteConfig
from providers.mysuite.soap import EnvelopeBuilder
from worker.samples import native_xml

REQUESTOR = "12211111-1111-1111-1111-111111111111"
LIMIT = timeout(5.0, 30.0)


Opener = Callable[..., AbstractContextManager[httpx.Response]]
"""`open(method, url, content=..., headers=...)`: one client's streaming request, with `LIMIT`."""


def _pair(open_: Opener, url: str, build: Callable[[], Any], link: str) -> None:
    envelope = build()
    headers = dict(envelope.headers, **{"Content-Length": str(envelope.content_length)})
    with open_("POST", url, content=envelope.body(), headers=headers) as response:
        read_capped(response.iter_bytes(), MAX_ANSWER_BYTES, "MYSuite")
    with open_("GET", link) as response:
        for _ in response.iter_bytes(65536):
            pass


def _cpu_per_pair(pair: Callable[[], None], count: int) -> float:
    started = time.thread_time()
    for _ in range(count):
        pair()
    return 1000 * (time.thread_time() - started) / count


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="request pairs per client and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    with sandbox_process() as sandbox:
        sandbox.configure(preset="bench")
        async_url = f"{sandbox.url}/mysuite/async/factwsfront.asmx"
        config = MySuiteConfig(
            async_url=async_url,
            sync_url=f"{sandbox.url}/mysuite/sync/FactWSFront.asmx",
            requestor=REQUESTOR,
            async_min_bytes=0,
        )
        provider = MySuiteClient(config)
        request_id = provider.submit(native_xml("HTTP-1"), "HTTP-1").request_id
        link = provider.retrieve(request_id).links["pdf"]
        provider.close()
        envelopes = EnvelopeBuilder(config.requestor, config.entity, config.user, config.username)

        def build() -> Any:
            return envelopes.build("ASYNC_CONVERT_VERIFY", request_id)

        client = httpx.Client(follow_redirects=False)
        wire = Wire(config.max_connections)
        openers: dict[str, Opener] = {
            "httpx.Client": lambda method, url, **kw: client.stream(method, url, timeout=LIMIT, **kw),
            "Wire": lambda method, url, **kw: wire.stream(method, url, LIMIT, **kw),
        }
        clients = {name: functools.partial(_pair, open_, async_url, build, link) for name, open_ in openers.items()}
        for pair in clients.values():  # connections open and code paths warm before measuring
            _cpu_per_pair(pair, 50)
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for n in range(args.rounds):
            log(f"round {n + 1}/{args.rounds}")
            for name, pair in clients.items():
                samples[name].append(_cpu_per_pair(pair, args.requests))
        client.close()
        wire.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratios = [w / c for w, c in zip(samples["Wire"], samples["httpx.Client"], strict=True)]
    report = {
        "command": command_line("bench.http_client", argv),
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "cpu_ms_per_pair": samples,
        "median_cpu_ms_per_pair": medians,
        "median_ratio_wire_to_client": statistics.median(ratios),
    }
    path = write_result("http_client", report)
    print(f"\nHTTP layer, CPU ms of this thread per request pair (status POST + download GET), {args.rounds} rounds")
    rows = [[name, medians[name], min(values), max(values)] for name, values in samples.items()]
    print(table(["client", "median ms/pair", "min", "max"], rows))
    print(f"Wire / httpx.Client, median of the per-round ratios: {report['median_ratio_wire_to_client']:.2f}")
    print(f"written {path}")
    return report


if __name__ == "__main__":
    main()
