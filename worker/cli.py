"""`einvoice`: submit documents, look at jobs and their history, retry, refresh links, run the sandbox and the demo."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from models import AmbiguousJob, JobNotFound, JobState, Store, make_engine
from providers import provider_names
from worker.views import terminal_text

F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Any:
    from worker.app import settings

    return settings


@contextmanager
def _store() -> Iterator[Store]:
    from tasks.context import store_setup

    engine = make_engine(_settings().database_url)
    store = Store(engine)
    # The CLI creates jobs and retries them too: its transitions count like a worker's.
    for setup in store_setup:
        setup(store)
    try:
        yield store
    finally:
        engine.dispose()


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _say(text: str, *, err: bool = False) -> None:
    """Every line for a terminal goes through here: ids and provider texts may carry escape sequences."""
    click.echo(terminal_text(text), err=err)


def _fail(message: str) -> None:
    _say(f"error: {message}", err=True)
    sys.exit(2)


PROVIDERS = click.Choice(provider_names())
PORT = click.IntRange(1, 65535)

# Exit statuses of `submit` besides 0 (everything accepted, or already known) and 2 (usage error,
# or a document refused: nothing was kept).
EXIT_INVALID = 3


@click.group()
def main() -> None:
    """Carry electronic invoices from an ERP to the e-invoicing providers and back."""


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--internal-id", help="The ERP's id of the document (1-50 characters). Defaults to the file name.")
@click.option("--provider", type=PROVIDERS, default="mysuite", show_default=True)
@click.option("--pattern", default="*.xml", show_default=True, help="Files taken from a folder.")
@click.option("--json", "as_json", is_flag=True)
def submit(path: Path, internal_id: str | None, provider: str, pattern: str, as_json: bool) -> None:
    """Accept FILE (or every matching file of a folder) for fiscal issue.

    Every file is processed; the exit status then says how it went: 0 when every document was
    accepted or already known, 3 when any is invalid (its job says why; send the corrected document
    under the same internal id), 2 when any was refused and nothing was kept for it (unusable
    internal id, too large, unreadable, or another document under an internal id already in use).
    """
    from worker.producer import ConflictingDocument, InvalidInput, enqueue, read_document
    from worker.views import job_status

    files = sorted(path.glob(pattern)) if path.is_dir() else [path]
    if path.is_dir() and internal_id is not None:
        _fail("--internal-id applies to a single file; files of a folder use their names")
    if not files:
        _fail(f"no files matching {pattern} in {path}")
    results: list[dict[str, Any]] = []
    policy = _settings().policy
    with _store() as store:
        from rich.progress import Progress

        with Progress(disable=as_json or len(files) == 1, transient=False) as progress:
            bar = progress.add_task("submitting", total=len(files))
            for file in files:
                key = file.stem if internal_id is None else internal_id
                try:
                    outcome = enqueue(store, read_document(file), key, provider=provider, policy=policy)
                except InvalidInput as exc:
                    refusal: dict[str, Any] = {"file": str(file), "internal_id": key, "refused": str(exc)}
                    if isinstance(exc, ConflictingDocument):
                        refusal["job_id"] = exc.job.id
                    results.append(refusal)
                else:
                    status = job_status(outcome.job)
                    status["created"] = outcome.created
                    status["replaced"] = outcome.replaced
                    results.append(status)
                progress.advance(bar)
    if as_json:
        _emit(results[0] if len(results) == 1 and not path.is_dir() else results)
    else:
        for item in results:
            if "refused" in item:
                _say(f"{item['internal_id']}: refused: {item['refused']}")
                continue
            note = "" if item["created"] else " (already known)"
            if item["replaced"]:
                note = " (replaces the earlier invalid document)"
            reason = f": {item['error']['message']}" if item.get("error") else ""
            _say(f"{item['internal_id']}: job {item['id']} {item['state']}{note}{reason}")
    tally = Counter(_outcome(item) for item in results)
    if path.is_dir():
        counts = ", ".join(f"{tally[kind]} {kind}" for kind in ("accepted", "already known", "invalid", "refused"))
        _say(f"{len(results)} files: {counts}", err=True)
    if tally["refused"]:
        sys.exit(2)
    if tally["invalid"]:
        sys.exit(EXIT_INVALID)


def _outcome(item: dict[str, Any]) -> str:
    if "refused" in item:
        return "refused"
    if item["state"] == JobState.INVALID:
        return "invalid"
    return "accepted" if item["created"] or item["replaced"] else "already known"


def _job_command(func: F) -> F:
    """ID is a job id or an internal id; `job:<job id>` or `internal:<internal id>` says which when one
    could be taken for the other (the store refuses an ID that is both)."""
    return click.argument("ref", metavar="ID")(func)


def _resolve(store: Store, ref: str) -> Any:
    try:
        return store.jobs.resolve(ref)
    except (JobNotFound, AmbiguousJob) as exc:
        _fail(str(exc))


@main.command()
@_job_command
@click.option("--json", "as_json", is_flag=True)
def status(ref: str, as_json: bool) -> None:
    """Show a job (ID: job id or internal id, or job:<job id> / internal:<internal id>)."""
    from worker.views import job_status

    with _store() as store:
        data = job_status(_resolve(store, ref))
    if as_json:
        _emit(data)
        return
    doc = data["document"]
    _say(f"{data['id']}  {data['provider']}  {data['internal_id']}  {data['state']}")
    _say(f"  request: {data['provider_request_id'] or '-'}  attempts: {data['attempts']}  polls: {data['polls']}")
    if doc["guid"]:
        _say(f"  document: {doc['guid']} year {doc['year']} batch {doc['batch'] or '-'} serial {doc['serial']}")
    elif doc["fiscal_id"]:
        code = f" security code {doc['security_code']}" if doc.get("security_code") else ""
        _say(f"  document: {doc['fiscal_id']}{code}")
    if data["links"]["expires_at"]:
        _say(f"  links expire at {data['links']['expires_at']}")
    if data["error"]:
        _say(f"  error: {data['error']['message']}")


@main.command()
@_job_command
@click.option("--json", "as_json", is_flag=True)
def events(ref: str, as_json: bool) -> None:
    """Show a job's history, oldest first."""
    from worker.views import event_view

    with _store() as store:
        job = _resolve(store, ref)
        rows = [event_view(e) for e in store.jobs.events(job.id)]
    if as_json:
        _emit(rows)
        return
    for row in rows:
        move = f"{row['from_state'] or '-'} -> {row['to_state']}"
        _say(f"{row['at']}  {row['kind']:<10} {move:<24} {row['actor']:<16} {row['message'] or ''}")


@main.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]), help="Only jobs in this state.")
@click.option("--provider", type=PROVIDERS, help="Only jobs of this provider.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many jobs.")
@click.option("--json", "as_json", is_flag=True)
def list_jobs(state: str | None, provider: str | None, limit: int | None, as_json: bool) -> None:
    """List jobs, oldest first."""
    from worker.views import job_status

    with _store() as store:
        rows = [job_status(job) for job in store.jobs.list_jobs(state=state, provider=provider, limit=limit)]
    if as_json:
        _emit(rows)
        return
    for row in rows:
        _say(f"{row['id']}  {row['provider']:<9} {row['state']:<10} {row['internal_id']}")


@main.command()
@_job_command
def retry(ref: str) -> None:
    """Put a failed or expired job back to work (recorded with you as the actor)."""
    from worker.operator import retry as do_retry

    with _store() as store:
        try:
            job = do_retry(store, ref, _settings().policy)
        except (ValueError, JobNotFound, AmbiguousJob) as exc:
            _fail(str(exc))
    _say(f"{job.id}: {job.state}")


@main.command()
@_job_command
@click.option("--json", "as_json", is_flag=True)
def links(ref: str, as_json: bool) -> None:
    """Get fresh download links for a retrieved job now."""
    from worker.operator import refresh_now
    from worker.views import job_status

    with _store() as store:
        try:
            job = refresh_now(store, ref)
        except (ValueError, JobNotFound, AmbiguousJob) as exc:
            _fail(str(exc))
    data = job_status(job)["links"]
    if as_json:
        _emit(data)
    else:
        for kind in ("xml", "pdf"):
            _say(f"{kind}: {data[kind]}")
        _say(f"expires at: {data['expires_at']}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def providers(as_json: bool) -> None:
    """Show paused providers: refused credentials (until resumed) or unreachable (being probed)."""
    from worker.views import pause_view

    with _store() as store:
        rows = [pause_view(pause) for pause in store.pauses.provider_pauses()]
    if as_json:
        _emit(rows)
        return
    if not rows:
        _say("no provider is paused")
    for row in rows:
        until = f" until {row['until']}" if row["until"] else " until resumed"
        _say(f"{row['provider']}: paused ({row['kind']}) since {row['since']}{until}: {row['reason']}")


@main.command()
@click.argument("provider")
def resume(provider: str) -> None:
    """Let calls to PROVIDER start again (after fixing its credentials); its jobs go out at the next sweep."""
    import logging

    from worker.operator import operator_actor

    if provider not in provider_names():
        _fail(f"unknown provider {provider!r}; known: {', '.join(provider_names())}")
    with _store() as store:
        lifted = store.pauses.resume_provider(provider)
    if lifted is None:
        _say(f"{provider} was not paused")
        return
    logging.getLogger("einvoice.operator").warning(
        "provider=%s resumed by %s (was paused: %s)", provider, operator_actor(), lifted.kind
    )
    _say(f"{provider} resumed (was paused since {lifted.since.isoformat()}: {lifted.kind})")


@main.command()
def migrate() -> None:
    """Bring the database to the latest schema (same as `alembic upgrade head`)."""
    from worker.schema import upgrade

    upgrade(_settings().database_url)
    click.echo("schema is up to date")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=PORT)
def sandbox(host: str, port: int) -> None:
    """Serve every provider simulator on one port (MYSuite under /mysuite, Hacienda under /hacienda)."""
    import uvicorn

    from sandbox.app import build_app

    click.echo(f"sandbox on http://{host}:{port}/mysuite/async/factwsfront.asmx?WSDL and /hacienda/")
    uvicorn.run(build_app(), host=host, port=port, log_level="warning", access_log=False)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=PORT, default=None, help="Defaults to METRICS_PORT (9808).")
def metrics(host: str, port: int | None) -> None:
    """Serve Prometheus metrics: every worker's counters plus backlog gauges read from the database.

    Basic auth when METRICS_BASIC_AUTH (user:password) or METRICS_BASIC_AUTH_FILE is set.
    """
    from worker.metrics import serve

    settings = _settings()
    serve(
        database_url=settings.database_url,
        host=host,
        port=settings.metrics_port if port is None else port,
        providers=provider_names(),
    )


@main.command()
@click.option(
    "--count",
    type=click.IntRange(min=0),
    default=12,
    show_default=True,
    help="Generated 1-4 MB invoices besides the special ones.",
)
@click.option(
    "--seconds-per-mb", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Sandbox processing time."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Give up after this many seconds.",
)
@click.option(
    "--hacienda",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Hacienda (Costa Rica) comprobantes in the batch.",
)
@click.option(
    "--mseller",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="MSeller (Dominican Republic) e-CF in the batch: accepted, conditional, rejected in turn.",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True, help="Worker threads.")
def demo(count: int, seconds_per_mb: float, timeout: float, hacienda: int, mseller: int, concurrency: int) -> None:
    """Run the sandbox, a worker and beat, push a batch of invoices through, and show where each ended."""
    from worker.demo import run_demo

    sys.exit(
        run_demo(
            count=count,
            seconds_per_mb=seconds_per_mb,
            timeout=timeout,
            hacienda=hacienda,
            concurrency=concurrency,
            mseller=mseller,
        )
    )


@main.command()
@click.argument("kind", metavar="TYPE")
@click.argument("datafile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--cfdi",
    "cfdi_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Stamped CFDI to attach the addenda to; without it only the cfdi:Addenda node is produced.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout.")
def addenda(kind: str, datafile: Path, cfdi_path: Path | None, output: Path | None) -> None:
    """Build a retailer's addenda from DATAFILE through Prodigia, now, with no job (PRODIGIA_* settings).

    With --cfdi the result is the CFDI with the addenda attached, written only if everything the seal
    and the TimbreFiscalDigital cover is unchanged. Exit status: 0 done, 2 refused (bad input, refused
    credentials, rejected data or result), 75 temporary failure (maintenance, network): try later.
    """
    import os

    from providers.base import AuthError, InvalidPayload, ProviderError, TransientError
    from providers.prodigia import check_request, from_env

    try:
        datos = datafile.read_bytes()
        check_request(kind, datos)
        cfdi = cfdi_path.read_bytes() if cfdi_path is not None else None
    except InvalidPayload as exc:
        _fail(exc.message)
    except OSError as exc:
        _fail(f"cannot read input: {exc.strerror}")
    client = from_env()
    try:
        result = client.generate(kind, datos) if cfdi is None else client.attach(kind, datos, cfdi)
    except AuthError as exc:
        _fail(f"{exc}. Fix PRODIGIA_CONTRATO/USUARIO/PASSWD before trying again: Prodigia locks the user after 3.")
    except TransientError as exc:
        click.echo(f"error: {exc} (temporary: try again later)", err=True)
        sys.exit(75)
    except ProviderError as exc:
        _fail(str(exc))
    finally:
        client.close()
    if output is None:
        sys.stdout.buffer.write(result)
        sys.stdout.buffer.flush()
        return
    partial = output.with_name(f".{output.name}.part")
    partial.write_bytes(result)
    os.replace(partial, output)
    what = "CFDI with the addenda" if cfdi is not None else "addenda"
    click.echo(f"{what} written to {output} ({len(result)} bytes)", err=True)


if __name__ == "__main__":
    main()
