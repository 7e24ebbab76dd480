"""`einvoice`: submit documents, look at jobs and their history, retry, refresh links, run the sandbox and the demo."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from models import AmbiguousJob, JobNotFound, Store, make_engine

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


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group()
def main() -> None:
    """Carry electronic invoices from an ERP to the e-invoicing providers and back."""


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--internal-id", help="The ERP's id of the document (1-50 characters). Defaults to the file name.")
@click.option("--provider", default="mysuite", show_default=True)
@click.option("--pattern", default="*.xml", show_default=True, help="Files taken from a folder.")
@click.option("--json", "as_json", is_flag=True)
def submit(path: Path, internal_id: str | None, provider: str, pattern: str, as_json: bool) -> None:
    """Accept FILE (or every matching file of a folder) for fiscal issue."""
    from worker.producer import InvalidInput, enqueue
    from worker.views import job_status

    files = sorted(path.glob(pattern)) if path.is_dir() else [path]
    if path.is_dir() and internal_id is not None:
        _fail("--internal-id applies to a single file; files of a folder use their names")
    if not files:
        _fail(f"no files matching {pattern} in {path}")
    results: list[dict[str, Any]] = []
    refused = 0
    policy = _settings().policy
    with _store() as store:
        from rich.progress import Progress

        with Progress(disable=as_json or len(files) == 1, transient=False) as progress:
            bar = progress.add_task("submitting", total=len(files))
            for file in files:
                key = file.stem if internal_id is None else internal_id
                try:
                    outcome = enqueue(store, file.read_bytes(), key, provider=provider, policy=policy)
                    status = job_status(outcome.job)
                    status["created"] = outcome.created
                    results.append(status)
                except InvalidInput as exc:
                    refused += 1
                    results.append({"file": str(file), "internal_id": key, "refused": str(exc)})
                progress.advance(bar)
    if as_json:
        _emit(results[0] if len(results) == 1 and not path.is_dir() else results)
    else:
        for item in results:
            if "refused" in item:
                click.echo(f"{item['internal_id']}: refused: {item['refused']}")
            else:
                note = "" if item["created"] else " (already known)"
                reason = f": {item['error']['message']}" if item.get("error") else ""
                click.echo(f"{item['internal_id']}: job {item['id']} {item['state']}{note}{reason}")
    if refused == len(files):
        sys.exit(2)


def _job_command(func: F) -> F:
    return click.argument("ref", metavar="ID")(func)


def _resolve(store: Store, ref: str) -> Any:
    try:
        return store.resolve(ref)
    except (JobNotFound, AmbiguousJob) as exc:
        _fail(str(exc))


@main.command()
@_job_command
@click.option("--json", "as_json", is_flag=True)
def status(ref: str, as_json: bool) -> None:
    """Show a job (by job id or internal id)."""
    from worker.views import job_status

    with _store() as store:
        data = job_status(_resolve(store, ref))
    if as_json:
        _emit(data)
        return
    doc = data["document"]
    click.echo(f"{data['id']}  {data['provider']}  {data['internal_id']}  {data['state']}")
    click.echo(f"  request: {data['provider_request_id'] or '-'}  attempts: {data['attempts']}  polls: {data['polls']}")
    if doc["guid"]:
        click.echo(f"  document: {doc['guid']} year {doc['year']} batch {doc['batch'] or '-'} serial {doc['serial']}")
    if data["links"]["expires_at"]:
        click.echo(f"  links expire at {data['links']['expires_at']}")
    if data["error"]:
        click.echo(f"  error: {data['error']['message']}")


@main.command()
@_job_command
@click.option("--json", "as_json", is_flag=True)
def events(ref: str, as_json: bool) -> None:
    """Show a job's history, oldest first."""
    from worker.views import event_view

    with _store() as store:
        job = _resolve(store, ref)
        rows = [event_view(e) for e in store.events(job.id)]
    if as_json:
        _emit(rows)
        return
    for row in rows:
        move = f"{row['from_state'] or '-'} -> {row['to_state']}"
        click.echo(f"{row['at']}  {row['kind']:<10} {move:<24} {row['actor']:<16} {row['message'] or ''}")


@main.command("list")
@click.option("--state", help="Only jobs in this state.")
@click.option("--provider", help="Only jobs of this provider.")
@click.option("--limit", type=int, default=None)
@click.option("--json", "as_json", is_flag=True)
def list_jobs(state: str | None, provider: str | None, limit: int | None, as_json: bool) -> None:
    """List jobs, oldest first."""
    from models import JobState
    from worker.views import job_status

    if state and state not in {s.value for s in JobState}:
        _fail(f"unknown state {state!r}; states are {', '.join(s.value for s in JobState)}")
    with _store() as store:
        rows = [job_status(job) for job in store.list_jobs(state=state, provider=provider, limit=limit)]
    if as_json:
        _emit(rows)
        return
    for row in rows:
        click.echo(f"{row['id']}  {row['provider']:<9} {row['state']:<10} {row['internal_id']}")


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
    click.echo(f"{job.id}: {job.state}")


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
        click.echo(f"xml: {data['xml']}\npdf: {data['pdf']}\nexpires at: {data['expires_at']}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def providers(as_json: bool) -> None:
    """Show paused providers: refused credentials (until resumed) or unreachable (being probed)."""
    from worker.views import pause_view

    with _store() as store:
        rows = [pause_view(pause) for pause in store.provider_pauses()]
    if as_json:
        _emit(rows)
        return
    if not rows:
        click.echo("no provider is paused")
    for row in rows:
        until = f" until {row['until']}" if row["until"] else " until resumed"
        click.echo(f"{row['provider']}: paused ({row['kind']}) since {row['since']}{until}: {row['reason']}")


@main.command()
@click.argument("provider")
def resume(provider: str) -> None:
    """Let calls to PROVIDER start again (after fixing its credentials); its jobs go out at the next sweep."""
    import logging

    from providers import provider_names
    from worker.operator import operator_actor

    if provider not in provider_names():
        _fail(f"unknown provider {provider!r}; known: {', '.join(provider_names())}")
    with _store() as store:
        lifted = store.resume_provider(provider)
    if lifted is None:
        click.echo(f"{provider} was not paused")
        return
    logging.getLogger("einvoice.operator").warning(
        "provider=%s resumed by %s (was paused: %s)", provider, operator_actor(), lifted.kind
    )
    click.echo(f"{provider} resumed (was paused since {lifted.since.isoformat()}: {lifted.kind})")


@main.command()
def migrate() -> None:
    """Bring the database to the latest schema (same as `alembic upgrade head`)."""
    from worker.schema import upgrade

    upgrade(_settings().database_url)
    click.echo("schema is up to date")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--admin-token",
    envvar="SANDBOX_ADMIN_TOKEN",
    help="Required by the /_admin/ endpoints (X-Admin-Token or Bearer); mandatory beyond loopback.",
)
def sandbox(host: str, port: int, admin_token: str | None) -> None:
    """Serve every provider simulator on one port (MYSuite under /mysuite, Hacienda under /hacienda)."""
    import uvicorn

    from sandbox.app import AdminTokenMissing, build_app, check_admin_exposure

    try:
        check_admin_exposure(host, admin_token)
    except AdminTokenMissing as exc:
        _fail(str(exc))
    click.echo(f"sandbox on http://{host}:{port}/mysuite/async/factwsfront.asmx?WSDL and /hacienda/")
    uvicorn.run(build_app(admin_token or None), host=host, port=port, log_level="warning", access_log=False)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Defaults to METRICS_PORT (9808).")
def metrics(host: str, port: int | None) -> None:
    """Serve Prometheus metrics: every worker's counters plus backlog gauges read from the database.

    Basic auth when METRICS_BASIC_AUTH (user:password) or METRICS_BASIC_AUTH_FILE is set.
    """
    from providers import provider_names
    from worker.metrics import serve

    settings = _settings()
    serve(
        database_url=settings.database_url,
        host=host,
        port=port or settings.metrics_port,
        providers=provider_names(),
    )


@main.command()
@click.option("--count", default=12, show_default=True, help="Generated 1-4 MB invoices besides the special ones.")
@click.option("--seconds-per-mb", default=1.0, show_default=True, help="Sandbox processing time.")
@click.option("--timeout", default=300.0, show_default=True, help="Give up after this many seconds.")
@click.option("--hacienda", default=4, show_default=True, help="Hacienda (Costa Rica) comprobantes in the batch.")
@click.option("--concurrency", default=8, show_default=True)
def demo(count: int, seconds_per_mb: float, timeout: float, hacienda: int, concurrency: int) -> None:
    """Run the sandbox, a worker and beat, push a batch of invoices through, and show where each ended."""
    from worker.demo import run_demo

    sys.exit(
        run_demo(
            count=count, seconds_per_mb=seconds_per_mb, timeout=timeout, hacienda=hacienda, concurrency=concurrency
        )
    )


if __name__ == "__main__":
    main()
