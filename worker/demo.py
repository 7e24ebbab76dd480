"""`einvoice demo`: the whole service on one machine, end to end, in a couple of minutes.

With nothing configured it runs on the embedded default (SQLite and kombu's filesystem transport
in a fresh folder); with DATABASE_URL and CELERY_BROKER_URL set it runs on PostgreSQL and Redis.
It starts the sandbox, a Celery worker with embedded beat, submits generated 1-4 MB invoices plus
one small (sync path), one duplicate and one invalid document, Hacienda comprobantes and MSeller
e-CF (accepted, accepted with observations, rejected, in turn), and reports where each one ended.
A few small invoices ask for a retailer's addenda (Prodigia sandbox): most are attached, one has
data the service cannot process, one names a type that does not exist and is refused at submit.
One SAT bulk download (MYSuite Descarga Masiva sandbox, a timeline of seconds instead of hours) goes
from registered to indexed, and the closing note shows its history and the CFDI it indexed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from models import FINAL
from models.states import ADDENDA, DOWNLOAD

MB = 1024 * 1024
ADDENDAS: tuple[tuple[str, str], ...] = (
    ("soriana", "Soriana\nProveedor|12345\nRemision|R-{n}\nFolioPedido|P-{n}\nCantidad|3\n"),
    ("homedepot", "HomeDepot\nrequestForPaymentIdentification|INV-{n}\norderIdentification|PO-{n}\n"),
    ("liverpool-heb", "Liverpool/HEB\nreferenceIdentification|{n}\nDeliveryNote|DN-{n}\n"),
    ("chedraui", "Chedraui\nthis line is not Campo|valor data\n"),
    ("tiendas-imaginarias", "Tiendas Imaginarias\nCampo|valor\n"),
)
"""The demo's addenda requests: three attached, one refused by the service (its data lines are not
`Campo|valor`), one refused at submit (an unknown type)."""


def _environment(seconds_per_mb: float, port: int) -> tuple[dict[str, str], Path]:
    env = dict(os.environ)
    if not env.get("EINVOICE_HOME"):
        env["EINVOICE_HOME"] = tempfile.mkdtemp(prefix="einvoice-demo-")
    home = Path(env["EINVOICE_HOME"])
    base = f"http://127.0.0.1:{port}"
    env.update(
        {
            "MYSUITE_ASYNC_URL": f"{base}/mysuite/async/factwsfront.asmx",
            "MYSUITE_SYNC_URL": f"{base}/mysuite/sync/FactWSFront.asmx",
            "HACIENDA_API_URL": f"{base}/hacienda/recepcion/v1/",
            "HACIENDA_IDP_URL": f"{base}/hacienda/idp/auth/realms/rut-stag/protocol/openid-connect/token",
            "PRODIGIA_ADDENDAS_URL": f"{base}/prodigia/PadeServ/IntegracionAddendas",
            "SANDBOX_MYSUITE_SECONDS_PER_MB": str(seconds_per_mb),
            "SANDBOX_MYSUITE_FAILURE_RATE": env.get("SANDBOX_MYSUITE_FAILURE_RATE", "0.1"),
            "SANDBOX_MYSUITE_SEED": env.get("SANDBOX_MYSUITE_SEED", "7"),
            "EINVOICE_POLL_SECONDS_PER_MB": str(seconds_per_mb),
            "EINVOICE_SWEEP_INTERVAL_SECONDS": "2",
            "EINVOICE_REDISPATCH_SECONDS": "15",
            "SANDBOX_HACIENDA_PROCESSING_SECONDS": env.get("SANDBOX_HACIENDA_PROCESSING_SECONDS", "2"),
        }
    )
    # The sandbox's own login, unless real credentials were configured; no client-side rate plan,
    # since the sandbox's quota is far above a demo's handful of calls.
    env.setdefault("HACIENDA_USERNAME", "cpj-3-101-123456@stag.comprobanteselectronicos.go.cr")
    env.setdefault("HACIENDA_PASSWORD", "sandbox")
    env.setdefault("HACIENDA_RATE_PER_HOUR", "0")
    env.setdefault("HACIENDA_RATE_PER_DAY", "0")
    from sandbox.mseller.config import DEFAULT_API_KEY, DEFAULT_EMAIL, DEFAULT_PASSWORD

    env.setdefault("MSELLER_URL", f"{base}/mseller")
    env.setdefault("MSELLER_EMAIL", DEFAULT_EMAIL)
    env.setdefault("MSELLER_PASSWORD", DEFAULT_PASSWORD)
    env.setdefault("MSELLER_API_KEY", DEFAULT_API_KEY)
    # Descarga Masiva: SAT answers in seconds here, so the long poll schedule shrinks to match.
    env.setdefault("SANDBOX_MYSUITE_DM_TIMELINE", "1,2,3")
    env.setdefault("SANDBOX_MYSUITE_DM_STEP_SECONDS", "2")
    env.setdefault("SANDBOX_MYSUITE_DM_PACKAGE_SIZE", "200")
    env.setdefault("EINVOICE_DOWNLOAD_POLL_SECONDS", "1,2,4")
    if not env.get("MYSUITE_FIEL_CER_FILE"):
        # The sandbox takes any e.firma; a real one comes from the operator's *_FILE settings.
        home.mkdir(parents=True, exist_ok=True)
        (home / "demo-fiel.cer").write_bytes(b"demo certificate")
        (home / "demo-fiel.key").write_bytes(b"demo private key")
        env["MYSUITE_FIEL_CER_FILE"] = str(home / "demo-fiel.cer")
        env["MYSUITE_FIEL_KEY_FILE"] = str(home / "demo-fiel.key")
        env["MYSUITE_FIEL_PASSWORD"] = "demo"
    return env, home


MSELLER_OUTCOMES = ("accepted", "conditional", "rejected")


def _mseller_outcomes(count: int) -> str:
    """The sandbox's scripted outcome of each demo e-CF (`SANDBOX_MSELLER_OUTCOMES`), in turn."""
    from providers.mseller.samples import encf

    return ",".join(f"{encf(n + 1)}:{MSELLER_OUTCOMES[n % len(MSELLER_OUTCOMES)]}" for n in range(count))


def run_demo(
    *, count: int, seconds_per_mb: float, timeout: float, hacienda: int, concurrency: int, mseller: int = 3
) -> int:
    from rich.console import Console

    from sandbox.server import ServerThread, free_port

    console = Console(width=max(Console().width, 110))
    port = free_port()
    env, home = _environment(seconds_per_mb, port)
    if mseller:
        env["SANDBOX_MSELLER_OUTCOMES"] = _mseller_outcomes(mseller)
    os.environ.update(env)

    # Settings are read when the app module is imported: only now, with the environment in place.
    from models import Store, make_engine
    from sandbox.app import build_app
    from worker.app import settings
    from worker.process import worker_command
    from worker.schema import upgrade

    where = "embedded (SQLite + filesystem broker)" if settings.embedded else "PostgreSQL + Redis"
    console.print(f"[bold]einvoice demo[/] on {where}; data in {home}")
    upgrade(settings.database_url)
    store = Store(make_engine(settings.database_url))
    started = time.monotonic()
    with ServerThread(build_app(), port=port) as server:
        log_path = home / "worker.log"
        with log_path.open("ab") as log_file:
            worker = subprocess.Popen(
                worker_command(
                    name=f"demo-{os.getpid()}", concurrency=concurrency, beat_schedule=home / "beat-schedule"
                ),
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:
                job_ids = _submit_batch(console, store, count, hacienda, mseller)
                download_ids = _request_download(console, store)
                finished = _wait(console, store, job_ids, timeout, worker, download_ids)
            finally:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
        counters = {
            provider: httpx.get(f"{server.url}/{provider}/_admin/counters", timeout=10).json()
            for provider in ("mysuite", "hacienda", "prodigia", "mseller")
        }
    elapsed = time.monotonic() - started
    _report(console, store, job_ids, counters, elapsed, log_path)
    _download_note(console, store, download_ids, counters["mysuite"])
    store.engine.dispose()
    return 0 if finished else 1


def _submit_batch(console: Any, store: Any, count: int, hacienda: int, mseller: int = 0) -> list[str]:
    from rich.progress import Progress

    from providers.hacienda.samples import sample_comprobante
    from providers.mseller.samples import sample_ecf
    from worker.app import settings
    from worker.producer import InvalidInput, enqueue
    from worker.samples import native_xml

    rng = random.Random(2026)
    run = f"{int(time.time()):x}"
    documents: list[tuple[str, str, bytes, tuple[str, bytes] | None]] = []
    for n in range(count):
        size = int(rng.uniform(1.1, 3.9) * MB)
        key = f"DEMO-{run}-{n:03d}"
        documents.append(("mysuite", key, native_xml(key, size, folio=n + 1), None))
    small_id = f"DEMO-{run}-SMALL"
    documents.append(("mysuite", small_id, native_xml(small_id, 40_000, folio=900), None))
    documents.append(documents[0])  # the ERP sends the first invoice twice
    documents.append(("mysuite", f"DEMO-{run}-BAD", b"<fx:FactDocMX this is not XML", None))
    for n, (kind, datos) in enumerate(ADDENDAS):
        key = f"DEMO-{run}-AD{n}"
        request = (kind, datos.format(n=n).encode())
        documents.append(("mysuite", key, native_xml(key, 20_000 + 5_000 * n, folio=800 + n), request))
    base = int(time.time()) % 1_000_000 * 100
    for n in range(hacienda):
        documents.append(("hacienda", f"DEMO-{run}-CR{n:02d}", sample_comprobante(base + n + 1), None))
    for n in range(mseller):
        # Sequences 1.. : the sandbox is new on every run, and its scripted outcomes name them.
        documents.append(("mseller", f"DEMO-{run}-DO{n:02d}", sample_ecf(n + 1), None))
    job_ids: list[str] = []
    with Progress(console=console, transient=False) as progress:
        bar = progress.add_task("submitting", total=len(documents))
        for provider, internal_id, payload, addenda in documents:
            try:
                outcome = enqueue(
                    store, payload, internal_id, provider=provider, policy=settings.policy, addenda=addenda
                )
            except InvalidInput as exc:
                console.print(f"{internal_id}: refused: {exc}")
            else:
                if outcome.created:
                    job_ids.append(outcome.job.id)
                else:
                    console.print(f"{internal_id}: sent twice, kept as job {outcome.job.id} (no duplicate)")
            progress.advance(bar)
    return job_ids


def _request_download(console: Any, store: Any) -> list[str]:
    """Last month's received CFDI of the demo taxpayer, registered once through the producer."""
    from datetime import datetime, timedelta

    from providers.base import ProviderError
    from providers.mysuite.descarga.records import MEXICO_CITY
    from worker.producer import request_download

    # SAT's periods are Mexico City wall time.
    first_of_month = datetime.now(MEXICO_CITY).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (first_of_month - timedelta(days=1)).replace(day=1)
    end = first_of_month - timedelta(seconds=1)
    try:
        result = request_download(store, rfc="JES900109Q90", start=start, end=end, direction="received", kind="cfdi")
    except ProviderError as exc:
        console.print(f"[red]download request refused: {exc}[/]")
        return []
    for text in result.refused:
        console.print(f"download request refused: {text}")
    console.print(f"download request for {start:%Y-%m}: {len(result.jobs)} SAT request(s) registered")
    return [job.id for job in result.jobs]


def _wait(
    console: Any,
    store: Any,
    job_ids: list[str],
    timeout: float,
    worker: subprocess.Popen[bytes],
    download_ids: Sequence[str] = (),
) -> bool:
    from rich.progress import Progress

    deadline = time.monotonic() + timeout
    with Progress(console=console, transient=False) as progress:
        bar = progress.add_task("processing", total=len(job_ids) + len(download_ids))
        while time.monotonic() < deadline:
            done = sum(1 for job_id in job_ids if store.jobs.get(job_id).state in FINAL)
            downloaded = sum(1 for job_id in download_ids if store.jobs.get(job_id).state in DOWNLOAD.final)
            progress.update(bar, completed=done + downloaded)
            addendas = store.jobs.addendas(job_ids).values()
            settled = done == len(job_ids) and downloaded == len(download_ids)
            if settled and all(_settled(store, child) for child in addendas):
                return True
            if worker.poll() is not None:
                console.print(f"[red]worker exited with {worker.returncode}[/]")
                return False
            time.sleep(0.5)
    console.print(f"[red]not finished after {timeout:.0f}s[/]")
    return False


def _settled(store: Any, addenda: Any) -> bool:
    """An addenda is done once final, or when its invoice never reached `retrieved` (nothing to attach to)."""
    if addenda.state in ADDENDA.final:
        return True
    return bool(store.jobs.get(addenda.parent_id).state in FINAL - {"retrieved"})


def _report(console: Any, store: Any, job_ids: list[str], counters: dict[str, Any], elapsed: float, log: Path) -> None:
    from rich.table import Table

    table = Table(title="final states")
    for column in ("provider", "internal id", "MB", "state", "polls", "seconds", "fiscal id / reason", "addenda"):
        table.add_column(column)
    states: dict[str, int] = {}
    addendas = store.jobs.addendas(job_ids)
    for job_id in job_ids:
        job = store.jobs.get(job_id)
        child = addendas.get(job_id)
        addenda = "" if child is None else f"{(child.doc_extra or {}).get('addenda_type')}: {child.state}"
        states[job.state] = states.get(job.state, 0) + 1
        seconds = (job.state_changed_at - job.created_at).total_seconds()
        detail = job.doc_guid or job.doc_fiscal_id or (job.error_message or "")[:60]
        if (job.doc_extra or {}).get("observations"):
            detail += " (accepted with observations)"
        table.add_row(
            job.provider,
            job.internal_id,
            f"{job.size_bytes / MB:.2f}",
            job.state,
            str(job.polls),
            f"{seconds:.1f}",
            detail,
            addenda,
        )
    console.print(table)
    mysuite, hacienda = counters["mysuite"], counters["hacienda"]
    created = [entry["documents"] for entry in (*mysuite["async"].values(), *mysuite["sync"].values())]
    created += [entry.get("created", 0) for entry in hacienda["claves"].values()]
    created += [entry.get("created", 0) for entry in counters["mseller"]["ecfs"].values()]
    resent = sum(1 for n in created if n > 1)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    console.print(f"{len(job_ids)} jobs: {summary}; documents created twice at the provider: {resent}")
    console.print(f"total {elapsed:.1f}s; worker log: {log}")
    _addenda_note(console, store, list(addendas.values()), counters["prodigia"])


def _addenda_note(console: Any, store: Any, addendas: list[Any], prodigia: dict[str, Any]) -> None:
    """The closing note: where the addendas ended, and one archived result with its history."""
    for child in addendas:
        if child.state == "failed":
            console.print(f"addenda of {child.internal_id} failed: {child.error_message}")
    attached = [child for child in addendas if child.state == "attached"]
    console.print(f"addendas: {len(attached)} of {len(addendas)} attached; Prodigia counters: {prodigia}")
    if not attached:
        return
    artifact = next(a for a in store.jobs.artifacts(attached[0].id) if a.kind == "addenda")
    console.print(f"[bold]archived addenda[/] {artifact.path} ({artifact.size_bytes} bytes, sha256 {artifact.sha256})")
    from lxml import etree

    content = Path(artifact.path).read_bytes()
    root = etree.fromstring(content, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    addenda_node = etree.tostring(root[-1], encoding="unicode", pretty_print=True)
    console.print(content[:240].decode("utf-8", "replace") + " …", markup=False, highlight=False)
    console.print(f"its last child, the addenda:\n{addenda_node.rstrip()}", markup=False, highlight=False)
    console.print(f"events of addenda {attached[0].id} (invoice {attached[0].internal_id}):")
    for event in store.jobs.events(attached[0].id):
        console.print(
            f"  {event.at.isoformat()}  {event.kind:<16} {event.from_state or '-'} -> {event.to_state}"
            f"  {event.message}",
            markup=False,
        )


def _download_note(console: Any, store: Any, download_ids: list[str], mysuite: dict[str, Any]) -> None:
    """The download request's history, its packages and a few of the CFDI it indexed."""
    from models.cfdi import list_cfdi
    from tasks.downloads import download_view

    for job_id in download_ids:
        view = download_view(store, store.jobs.get(job_id))
        period = view["period"]
        console.print(
            f"[bold]download request[/] {job_id}: {view['state']}, {period['from']} - {period['to']} "
            f"({view['direction']}), {view['cfdi_count']} CFDI, {view['indexed']} indexed",
            highlight=False,
        )
        for event in store.jobs.events(job_id):
            console.print(
                f"  {event.at.isoformat()}  {event.kind:<10} {event.from_state or '-'} -> {event.to_state}"
                f"  {event.message}",
                markup=False,
            )
        for package in view["packages"]:
            console.print(f"  package {package['id']}: {package['state']}, sha256 {package['sha256']}", markup=False)
    links = {key: entry["links"] for key, entry in mysuite.get("descarga", {}).get("packages", {}).items()}
    console.print(f"links asked per package (SAT counts each as a download): {links}", markup=False)
    for row in list_cfdi(store.engine, direction="received", limit=3):
        console.print(f"  cfdi {row.uuid} {row.issued_at} {row.issuer_rfc} -> {row.receiver_rfc} {row.total}")
