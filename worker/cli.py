"""`einvoice`: submit documents, look at jobs and their history, retry, refresh links, run the sandbox and the demo."""

from __future__ import annotations

import functools
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from models import AmbiguousJob, DownloadState, JobNotFound, JobState, Store, make_engine
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
@click.option("--addenda", "addenda_type", metavar="TYPE", help="Retailer addenda to attach once stamped (Prodigia).")
@click.option(
    "--addenda-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The ERP's addenda data (text lines) for --addenda.",
)
def submit(
    path: Path,
    internal_id: str | None,
    provider: str,
    pattern: str,
    as_json: bool,
    addenda_type: str | None,
    addenda_data: Path | None,
) -> None:
    """Accept FILE (or every matching file of a folder) for fiscal issue.

    Every file is processed; the exit status then says how it went: 0 when every document was
    accepted or already known, 3 when any is invalid (its job says why; send the corrected document
    under the same internal id), 2 when any was refused and nothing was kept for it (unusable
    internal id, too large, unreadable, or another document under an internal id already in use),
    or when the addenda asked for (--addenda, one file only) is refused: an unknown type or data.
    """
    from worker.producer import ConflictingDocument, InvalidInput, addenda_request, enqueue, read_document

    files = sorted(path.glob(pattern)) if path.is_dir() else [path]
    if path.is_dir() and internal_id is not None:
        _fail("--internal-id applies to a single file; files of a folder use their names")
    addenda: tuple[str, bytes] | None = None
    if (addenda_type is None) != (addenda_data is None):
        _fail("--addenda and --addenda-data go together")
    if addenda_type is not None and addenda_data is not None:
        if path.is_dir():
            _fail("--addenda applies to a single file: each invoice has its own addenda data")
        addenda = (addenda_type, addenda_data.read_bytes())
        try:
            addenda_request(*addenda)
        except InvalidInput as exc:
            _fail(str(exc))
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
                    outcome = enqueue(
                        store, read_document(file), key, provider=provider, policy=policy, addenda=addenda
                    )
                except InvalidInput as exc:
                    refusal: dict[str, Any] = {"file": str(file), "internal_id": key, "refused": str(exc)}
                    if isinstance(exc, ConflictingDocument):
                        refusal["job_id"] = exc.job.id
                    results.append(refusal)
                else:
                    status = _status(store, outcome.job, with_artifact=False)
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


def _status(store: Store, job: Any, *, with_artifact: bool = True) -> dict[str, Any]:
    """A job's status JSON, with its addenda if it has one."""
    from worker.views import addenda_view, job_status

    child = store.jobs.addendas([job.id]).get(job.id)
    if child is None:
        return job_status(job)
    kept = [a for a in store.jobs.artifacts(child.id) if a.kind == "addenda"] if with_artifact else []
    return job_status(job, addenda_view(child, kept[0] if kept else None))


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
    with _store() as store:
        data = _status(store, _resolve(store, ref))
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
    if data["addenda"]:
        addenda = data["addenda"]
        _say(f"  addenda {addenda['type']}: {addenda['state']} ({addenda['message']}); events: {addenda['id']}")


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
    from worker.views import addenda_view, job_status

    with _store() as store:
        jobs = store.jobs.list_jobs(state=state, provider=provider, limit=limit)
        children = store.jobs.addendas([job.id for job in jobs])
    rows = [job_status(job, addenda_view(children[job.id]) if job.id in children else None) for job in jobs]
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

    from providers.prodigia.client import PROVIDER as PRODIGIA
    from worker.operator import operator_actor

    known = [*provider_names(), PRODIGIA]
    if provider not in known:
        _fail(f"unknown provider {provider!r}; known: {', '.join(known)}")
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


# ------------------------------------------------------------------ HTTP API, keys and webhooks


def _server_secret() -> Any:
    from models.access import MissingSecret, ServerSecret

    try:
        return ServerSecret.load(embedded=_settings().embedded)
    except MissingSecret as exc:
        _fail(str(exc))


def _cli_actor() -> str:
    from worker.operator import operator_actor

    return operator_actor()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=PORT)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes; one per core serves more requests (each has its own connection pool).",
)
def api(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs). Needs EINVOICE_API_SECRET."""
    import uvicorn

    from worker.api.serve import NoDelayHttpToolsProtocol, build

    _settings()
    _server_secret()  # refused here, with the reason, rather than in every server process
    click.echo(f"API on http://{host}:{port}/docs")
    run = functools.partial(
        uvicorn.run, host=host, port=port, log_level="info", access_log=False, http=NoDelayHttpToolsProtocol
    )
    if workers == 1:
        run(build())
    else:
        run("worker.api.serve:build", factory=True, workers=workers)


@main.group()
def keys() -> None:
    """API keys: each holds a role (submitter, operator, auditor) and optionally one entity."""


@keys.command("create")
@click.option("--role", required=True, type=click.Choice(["submitter", "operator", "auditor"]))
@click.option("--entity", default=None, help="Issuer RFC, cédula or RNC the key is limited to.")
@click.option("--name", default=None, help="A name to recognise the key by.")
@click.option("--json", "as_json", is_flag=True)
def keys_create(role: str, entity: str | None, name: str | None, as_json: bool) -> None:
    """Make a key and print it once: it is stored only as a keyed hash."""
    from models.access import Role, create_key

    secret = _server_secret()
    with _store() as store, store.db.session() as session:
        row, token = create_key(session, secret, role=Role(role), entity=entity, name=name, actor=_cli_actor())
        info = {"id": row.id, "name": row.name, "role": row.role, "entity": row.entity, "key": token}
    if as_json:
        _emit(info)
        return
    click.echo(f"{info['id']} ({role}, entity {entity or 'all'}): {token}")
    click.echo("This is the only time the key is shown; store it now.", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
def keys_list(as_json: bool) -> None:
    """Keys with their role, entity and state (never the keys themselves)."""
    from models.access import list_keys

    with _store() as store, store.db.session() as session:
        rows = [
            {
                "id": k.id,
                "name": k.name,
                "role": k.role,
                "entity": k.entity,
                "created_at": k.created_at.isoformat(),
                "created_by": k.created_by,
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in list_keys(session)
        ]
    if as_json:
        _emit(rows)
        return
    for r in rows:
        status = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
        click.echo(f"{r['id']}  {r['role']:<9} {r['entity'] or '*':<16} {status:<10} {r['name']}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key; its next request is refused."""
    from models.access import revoke_key

    with _store() as store, store.db.session() as session:
        revoked = revoke_key(session, key_id, actor=_cli_actor())
    if not revoked:
        _fail(f"no active key {key_id}")
    click.echo(f"{key_id} revoked")


@main.group()
def webhooks() -> None:
    """Webhook subscriptions (Standard Webhooks signatures) and their deliveries."""


@webhooks.command("add")
@click.argument("url")
@click.option("--events", required=True, help="Comma-separated, e.g. invoice.failed,invoice.invalid.")
@click.option("--entity", default=None, help="Only this entity's invoices (default: all).")
@click.option("--json", "as_json", is_flag=True)
def webhooks_add(url: str, events: str, entity: str | None, as_json: bool) -> None:
    """Subscribe URL to events and print its signing secret once."""
    from urllib.parse import urlsplit

    from models.webhooks import add_subscription

    if urlsplit(url).scheme not in ("http", "https"):
        _fail("the URL must be http or https")
    secret = _server_secret()
    wanted = [e.strip() for e in events.split(",") if e.strip()]
    with _store() as store:
        try:
            with store.db.session() as session:
                row, signing = add_subscription(
                    session, secret, url=url, events=wanted, entity=entity, actor=_cli_actor()
                )
                info = {
                    "id": row.id,
                    "url": row.url,
                    "events": ",".join(row.event_types),
                    "entity": row.entity,
                    "secret": signing,
                }
        except ValueError as exc:
            _fail(str(exc))
    if as_json:
        _emit(info)
        return
    click.echo(f"{info['id']}: {signing}")
    click.echo("This is the only time the signing secret is shown; give it to the receiver now.", err=True)


@webhooks.command("list")
@click.option("--json", "as_json", is_flag=True)
def webhooks_list(as_json: bool) -> None:
    """Subscriptions (never their secrets)."""
    from models.webhooks import list_subscriptions

    with _store() as store, store.db.session() as session:
        rows = [
            {
                "id": s.id,
                "url": s.url,
                "events": ",".join(s.event_types),
                "entity": s.entity,
                "created_at": s.created_at.isoformat(),
                "disabled_at": s.disabled_at.isoformat() if s.disabled_at else None,
                "disabled_reason": s.disabled_reason,
            }
            for s in list_subscriptions(session)
        ]
    if as_json:
        _emit(rows)
        return
    for r in rows:
        status = f"disabled: {r['disabled_reason']}" if r["disabled_at"] else "active"
        click.echo(f"{r['id']}  {r['url']}  {r['events']}  entity {r['entity'] or '*'}  {status}")


@webhooks.command("remove")
@click.argument("subscription_id", metavar="ID")
def webhooks_remove(subscription_id: str) -> None:
    """Delete a subscription and its deliveries."""
    from models.webhooks import remove_subscription

    with _store() as store, store.db.session() as session:
        removed = remove_subscription(session, subscription_id, actor=_cli_actor())
    if not removed:
        _fail(f"no subscription {subscription_id}")
    click.echo(f"{subscription_id} removed")


@webhooks.command("deliveries")
@click.option("--failed", is_flag=True, help="Only dead letters and deliveries still being retried.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def webhooks_deliveries(failed: bool, limit: int, as_json: bool) -> None:
    """Recent deliveries, newest first."""
    from models.webhooks import list_deliveries

    with _store() as store, store.db.session() as session:
        rows = [
            {
                "id": d.id,
                "subscription_id": d.subscription_id,
                "event_type": d.event_type,
                "job_id": d.job_id,
                "state": d.state,
                "attempts": d.attempts,
                "occurred_at": d.occurred_at.isoformat(),
                "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
                "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
                "last_status": d.last_status,
                "last_error": d.last_error,
            }
            for d in list_deliveries(session, failed=failed, limit=limit)
        ]
    if as_json:
        _emit(rows)
        return
    for r in rows:
        click.echo(
            f"{r['id']}  {r['subscription_id']}  {r['event_type']:<18} {r['state']:<9} "
            f"attempts {r['attempts']}  {r['last_error'] or ''}"
        )


@webhooks.command("replay")
@click.argument("delivery_id", metavar="ID")
def webhooks_replay(delivery_id: str) -> None:
    """Send a delivery again now (same webhook-id and body)."""
    from models.webhooks import replay

    with _store() as store:
        try:
            with store.db.session() as session:
                replay(session, delivery_id, actor=_cli_actor())
        except (LookupError, ValueError) as exc:
            _fail(str(exc).strip("'\""))
    click.echo(f"{delivery_id} queued again")


# ------------------------------------------------------------------ Descarga Masiva and the CFDI index


def _wall_time(text: str) -> Any:
    """A bad period is a usage error here (exit 2), an InvalidInput in the producer."""
    from worker.producer import InvalidInput, wall_time

    try:
        return wall_time(text)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc)) from None


@main.group()
def downloads() -> None:
    """SAT bulk downloads through MYSuite Descarga Masiva (MYSUITE_* and MYSUITE_FIEL_* settings)."""


@downloads.command("request")
@click.option("--rfc", required=True, help="The taxpayer whose FIEL signs the request.")
@click.option("--from", "start", required=True, help='Start, "YYYY-MM-DD HH:MM:SS" (Mexico City time).')
@click.option("--to", "end", required=True, help="End, inclusive, in the same form.")
@click.option("--direction", type=click.Choice(["issued", "received", "both"]), required=True)
@click.option("--kind", type=click.Choice(["cfdi", "metadata", "both"]), required=True)
@click.option("--service", type=click.Choice(["cfdis", "retenciones", "both"]), default="cfdis", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def downloads_request(rfc: str, start: str, end: str, direction: str, kind: str, service: str, as_json: bool) -> None:
    """Register a download with MYSuite once; one job per SAT request it reports.

    Exit status: 0 registered (or adopted), 2 refused (a v1.5 rule, or SAT refused every request),
    75 temporary failure: the registration may or may not have reached SAT, so look with
    `downloads list` before trying again.
    """
    from providers.base import ProviderError, TransientError
    from providers.mysuite.descarga import RuleViolation
    from tasks.downloads import download_view
    from worker.producer import InvalidInput, request_download

    begin, finish = _wall_time(start), _wall_time(end)
    with _store() as store:
        try:
            result = request_download(
                store, rfc=rfc, start=begin, end=finish, direction=direction, kind=kind, service=service
            )
        except RuleViolation as exc:
            _fail(f"refused by rule {exc.rule.value}: {exc.message}")
        except InvalidInput as exc:
            _fail(str(exc))
        except TransientError as exc:
            _say(f"error: {exc} (temporary: check `einvoice downloads list` before trying again)", err=True)
            sys.exit(75)
        except ProviderError as exc:
            _fail(str(exc))
        rows = [download_view(store, job) for job in [*result.split, *result.jobs]]
    if as_json:
        _emit({"requests": rows, "refused": result.refused})
    else:
        for row in rows:
            _say(f"{row['id']}  {row['state']:<10} {row['provider_request_id'] or '-'}  {row['direction']}")
        for text in result.refused:
            _say(f"refused: {text}", err=True)
    if not result.jobs:
        sys.exit(2)


@downloads.command("list")
@click.option("--state", type=click.Choice([s.value for s in DownloadState]), help="Only requests in this state.")
@click.option("--json", "as_json", is_flag=True)
def downloads_list(state: str | None, as_json: bool) -> None:
    """List download requests, oldest first."""
    from tasks.downloads import KIND, download_view

    with _store() as store:
        rows = [download_view(store, job) for job in store.jobs.list_jobs(state=state, kind=KIND)]
    if as_json:
        _emit(rows)
        return
    for row in rows:
        period: Any = row["period"]
        _say(f"{row['id']}  {row['state']:<10} {period['from']} - {period['to']}  {row['direction']}  {row['kind']}")


@downloads.command("status")
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True)
def downloads_status(job_id: str, as_json: bool) -> None:
    """Show one download request with its packages."""
    from tasks.downloads import KIND, download_view

    with _store() as store:
        try:
            job = store.jobs.get(job_id)
        except JobNotFound as exc:
            _fail(str(exc))
        if job.kind != KIND:
            _fail(f"{job_id} is not a download request")
        data = download_view(store, job)
    if as_json:
        _emit(data)
        return
    period: Any = data["period"]
    _say(f"{data['id']}  {data['rfc']}  {data['state']}  {period['from']} - {period['to']}")
    _say(f"  request: {data['provider_request_id'] or '-'}  SAT state: {data['sat_state']}  CFDI: {data['cfdi_count']}")
    packages: Any = data["packages"]
    for package in packages:
        _say(f"  package {package['id']}: {package['state']}  sha256 {package['sha256'] or '-'}")
    if data["split_into"]:
        _say(f"  split into {data['split_into']}")
    error: Any = data["error"]
    if error:
        _say(f"  error: {error['message']}")


@main.group()
def cfdi() -> None:
    """The CFDI indexed from downloaded SAT packages."""


@cfdi.command("list")
@click.option("--direction", type=click.Choice(["issued", "received"]))
@click.option("--from", "start", help="Issued at or after (YYYY-MM-DD[ HH:MM:SS], Mexico City time).")
@click.option("--to", "end", help="Issued before.")
@click.option("--rfc", help="Issuer or receiver RFC.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def cfdi_list(
    direction: str | None, start: str | None, end: str | None, rfc: str | None, limit: int, as_json: bool
) -> None:
    """List indexed CFDI by issue time."""
    from models.cfdi import cfdi_json, list_cfdi

    with _store() as store:
        rows = [
            cfdi_json(row)
            for row in list_cfdi(
                store.engine,
                direction=direction,
                issued_from=_wall_time(start) if start else None,
                issued_to=_wall_time(end) if end else None,
                rfc=rfc,
                limit=limit,
            )
        ]
    if as_json:
        _emit(rows)
        return
    for row in rows:
        _say(
            f"{row['uuid']}  {row['direction']:<8} {row['issued_at'] or '-'}  {row['issuer_rfc'] or '-'} -> "
            f"{row['receiver_rfc'] or '-'}  {row['total'] or '-'}  {row['status'] or '-'}"
        )


if __name__ == "__main__":
    main()
