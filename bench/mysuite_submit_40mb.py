"""Submitting a 40 MB native XML to MYSuite async: time and memory, streamed client vs plain zeep.

Run from the repository root:

    python -m bench.mysuite_submit_40mb [--runs 3] [--size 40000000]

The sandbox (production environment, `bench` preset: no size minimum, no processing delay) runs in
a process of its own so its memory never mixes with the client's. Every measured submit runs in a
fresh process too: it loads the document from a file (one allocation of exactly its size), warms
up the client with a small call, takes its RSS as the baseline, then submits while a thread samples
RSS every millisecond; the kernel's peak RSS (ru_maxrss) is read afterwards as a cross-check the
sampler cannot miss. The plain variant is what a straightforward zeep client does:
`service.RequestTransaction(..., Data1=base64(document))`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "bench" / "results") / "mysuite_submit_40mb.json"
REQUESTOR = "12211111-1111-1111-1111-111111111111"
ENTITY = "JES900109Q90"
VARIANTS = ("streamed", "plain_zeep")

SANDBOX_SCRIPT = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from sandbox.mysuite import MySuiteSandboxConfig, create_app

config = MySuiteSandboxConfig(env="production").with_preset("bench")
app = Starlette(routes=[Mount("/mysuite", app=create_app(config))])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def write_native_xml(path: Path, size: int) -> int:
    """A v8 FACTURA padded with concepts to at most `size` bytes, streamed to disk concept by concept."""
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<fx:FactDocMX xmlns:fx="http://www.fact.com.mx/schema/fx" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation='
        '"http://www.fact.com.mx/schema/fx http://www.mysuitemex.com/fact/schema/fx_2010_g.xsd">\n'
        "  <fx:Version>8</fx:Version>\n  <fx:Identificacion><fx:CdgPaisEmisor>MX</fx:CdgPaisEmisor>"
        f"<fx:TipoDeComprobante>FACTURA</fx:TipoDeComprobante><fx:RFCEmisor>{ENTITY}</fx:RFCEmisor>"
        "<fx:RazonSocialEmisor>EMPRESA DE PRUEBA</fx:RazonSocialEmisor><fx:Usuario>bench</fx:Usuario>"
        "<fx:AsignacionSolicitada><fx:Serie>B</fx:Serie><fx:TiempoDeEmision>2024-01-05T10:00:00"
        "</fx:TiempoDeEmision></fx:AsignacionSolicitada><fx:LugarExpedicion>06600</fx:LugarExpedicion>"
        "</fx:Identificacion>\n  <fx:Conceptos>\n"
    ).encode()
    tail = b"  </fx:Conceptos>\n</fx:FactDocMX>\n"
    written = 0
    with path.open("wb") as out:
        out.write(head)
        written += len(head)
        number = 0
        while True:
            number += 1
            concept = (
                f"    <fx:Concepto><fx:Cantidad>1</fx:Cantidad><fx:ClaveUnidad>E48</fx:ClaveUnidad>"
                f"<fx:ClaveProdServ>81112100</fx:ClaveProdServ><fx:Codigo>SKU-{number:08d}</fx:Codigo>"
                f"<fx:Descripcion>Servicio de procesamiento renglon {number}</fx:Descripcion>"
                f"<fx:ValorUnitario>100.00</fx:ValorUnitario><fx:Importe>100.00</fx:Importe>"
                f"<fx:ObjetoImp>02</fx:ObjetoImp></fx:Concepto>\n"
            ).encode()
            if written + len(concept) + len(tail) > size:
                break
            out.write(concept)
            written += len(concept)
        out.write(tail)
        written += len(tail)
    return written


class RssSampler:
    """Highest RSS seen by a thread polling /proc every `interval` seconds."""

    def __init__(self, interval: float = 0.001) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(variant: str, document: Path, base_url: str) -> dict[str, Any]:
    """One measured submit in this (fresh) process; prints nothing, returns the figures."""
    async_url = f"{base_url}/mysuite/async/factwsfront.asmx"
    payload = document.read_bytes()
    warmup = document.with_name("warmup.xml")
    internal_id = f"B-{variant[:6]}-{uuid.uuid4().hex[:16]}"
    if variant == "streamed":
        from providers.mysuite import MySuiteClient, MySuiteConfig

        client = MySuiteClient(
            MySuiteConfig(
                async_url=async_url,
                sync_url=f"{base_url}/mysuite/sync/FactWSFront.asmx",
                requestor=REQUESTOR,
                environment="production",
                async_min_bytes=0,
                upload_timeout=600.0,
            )
        )
        client.submit(warmup.read_bytes(), f"W-{uuid.uuid4().hex[:16]}")

        def submit() -> str:
            return client.submit(payload, internal_id).request_id

        started = time.perf_counter()
        client.validate(payload, internal_id)
        validate_seconds = time.perf_counter() - started
    else:
        import base64

        import zeep
        from zeep.transports import Transport

        wsdl = str(ROOT / "providers" / "mysuite" / "FactWSFront.wsdl")
        plain = zeep.Client(wsdl, transport=Transport(timeout=600, operation_timeout=600))
        service = plain.create_service("{http://www.fact.com.mx/schema/ws}FactWSFrontSoap", async_url)

        def call(data1: bytes, data2: str) -> str:
            result = service.RequestTransaction(
                Requestor=REQUESTOR,
                Transaction="ASYNC_CONVERT_NATIVE_XML",
                Country="MX",
                Entity=ENTITY,
                User=REQUESTOR,
                UserName=f"MX.{ENTITY}.einvoice",
                Data1=base64.b64encode(data1).decode("ascii"),
                Data2=data2,
                Data3="",
            )
            if not result.Response.Result:
                raise RuntimeError(f"refused: code {result.Response.Code}")
            return str(result.ResponseData.ResponseData1)

        call(warmup.read_bytes(), f"W-{uuid.uuid4().hex[:16]}")

        def submit() -> str:
            return call(payload, internal_id)

        validate_seconds = 0.0
    baseline = psutil.Process().memory_info().rss
    maxrss_before = _maxrss_bytes()
    with RssSampler() as sampler:
        started = time.perf_counter()
        request_id = submit()
        seconds = time.perf_counter() - started
    maxrss_after = _maxrss_bytes()
    kernel_peak = maxrss_after if maxrss_after > maxrss_before else sampler.peak
    peak_over_baseline = max(sampler.peak, kernel_peak) - baseline
    return {
        "variant": variant,
        "seconds": seconds,
        "validate_seconds": validate_seconds,
        "baseline_rss": baseline,
        "sampled_peak_over_baseline": sampler.peak - baseline,
        "kernel_peak_over_baseline": kernel_peak - baseline,
        "peak_over_baseline": peak_over_baseline,
        "request_id_ok": bool(request_id),
    }


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("sandbox process exited")
        try:
            httpx.get(f"{url}/mysuite/_admin/config", timeout=1.0).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("sandbox did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=40_000_000, help="document size in bytes (max 40 MiB)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--document", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.document, args.url)))
        return

    from sandbox.server import free_port

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="mysuite-bench-") as tmp:
        document = Path(tmp) / "native.xml"
        size = write_native_xml(document, args.size)
        write_native_xml(Path(tmp) / "warmup.xml", 4096)
        sandbox = subprocess.Popen([sys.executable, "-c", SANDBOX_SCRIPT, str(port)], cwd=ROOT, env=env)
        try:
            _wait_until_up(base_url, sandbox)
            runs: list[dict[str, Any]] = []
            for run in range(args.runs):
                for variant in VARIANTS if run % 2 == 0 else reversed(VARIANTS):
                    output = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "bench.mysuite_submit_40mb",
                            "--child",
                            variant,
                            "--document",
                            str(document),
                            "--url",
                            base_url,
                        ],
                        cwd=ROOT,
                        env=env,
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                    result = json.loads(output.strip().splitlines()[-1])
                    result["run"] = run + 1
                    runs.append(result)
                    print(
                        f"run {run + 1} {variant:<10} {result['seconds']:6.2f} s  "
                        f"peak +{result['peak_over_baseline'] / 1e6:7.1f} MB",
                        flush=True,
                    )
        finally:
            sandbox.terminate()
            sandbox.wait(timeout=10)

    summary: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        peak = statistics.median(r["peak_over_baseline"] for r in mine)
        summary[variant] = {
            "median_seconds": statistics.median(r["seconds"] for r in mine),
            "median_peak_over_baseline_bytes": peak,
            "median_peak_over_document": peak / size,
            "median_validate_seconds": statistics.median(r["validate_seconds"] for r in mine),
        }
    target = 2.5
    report = {
        "benchmark": "mysuite_submit_40mb",
        "document_bytes": size,
        "base64_bytes": 4 * ((size + 2) // 3),
        "runs_per_variant": args.runs,
        "target_peak_over_document": target,
        "streamed_meets_target": summary["streamed"]["median_peak_over_document"] <= target,
        "summary": summary,
        "runs": runs,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(
        f"document {size / 1e6:.1f} MB (base64 {report['base64_bytes'] / 1e6:.1f} MB), {args.runs} runs each, medians"
    )
    print(f"{'variant':<12} {'seconds':>8} {'peak over baseline':>20} {'x document':>11} {'validate s':>11}")
    for variant in VARIANTS:
        row = summary[variant]
        print(
            f"{variant:<12} {row['median_seconds']:8.2f} "
            f"{row['median_peak_over_baseline_bytes'] / 1e6:17.1f} MB "
            f"{row['median_peak_over_document']:11.2f} {row['median_validate_seconds']:11.2f}"
        )
    print(f"target: streamed peak <= {target} x document -> {'met' if report['streamed_meets_target'] else 'NOT met'}")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
