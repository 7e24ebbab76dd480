"""Routes of the HTTP API. Each one does what the matching CLI command does, through the same functions.

Reads go through the store and the views of `worker.views`, writes through `worker.producer` and
`worker.operator`, so the API adds only the HTTP edge: keys, roles, entity scoping, problem
details and an audit row per action.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from models import DownloadState, JobNotFound, JobState
from models.access import AmbiguousRef, Permission, Principal, ServerSecret, audit, resolve_visible, visible_jobs
from models.cfdi import cfdi_json, list_cfdi
from models.schema import Job
from models.webhooks import ReplayRefused, replay
from providers import get_provider, provider_names
from providers.base import ProviderError, TransientError
from providers.mysuite.descarga import RuleViolation
from tasks.downloads import KIND as DOWNLOAD_KIND
from tasks.downloads import download_view
from tasks.policy import Policy
from worker.api import schemas
from worker.api.auth import requires
from worker.api.problems import ProblemError, install, problem_response, responses
from worker.api.state import ApiState, api_state
from worker.producer import MAX_PAYLOAD_BYTES, Enqueued, InvalidInput, enqueue, request_download, wall_time
from worker.views import event_view, job_status, pause_view

log = logging.getLogger("einvoice.api")

State = Annotated[ApiState, Depends(api_state)]
Reader = Annotated[Principal, requires(Permission.READ)]
Submitter = Annotated[Principal, requires(Permission.SUBMIT)]
Operator = Annotated[Principal, requires(Permission.OPERATE)]

STATES = tuple(s.value for s in JobState)
DOWNLOAD_STATES = tuple(s.value for s in DownloadState)
FILE_KINDS = ("xml", "pdf", "answer")

SUBMIT_BODY = {
    "required": True,
    "description": "The document: native XML (MYSuite), comprobante XML (Hacienda), e-CF JSON (MSeller).",
    "content": {
        "application/xml": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "string", "format": "binary"}},
    },
}


def create_app(
    *,
    store: Any,
    secret: ServerSecret,
    policy: Policy,
    archive_dir: Path,
    broker_check: Any = None,
) -> FastAPI:
    """`broker_check()` raises when the broker cannot be reached (for /readyz)."""
    app = FastAPI(
        title="einvoice",
        version="1",
        description="Submit electronic invoices, follow them, retry them and fetch their files.",
    )
    app.state.einvoice = ApiState(store, secret, policy, archive_dir)
    install(app)

    @app.get("/livez", response_model=schemas.Health, tags=["health"])
    def livez() -> dict[str, Any]:
        return {"status": "ok", "checks": {}}

    @app.get("/readyz", response_model=schemas.Health, tags=["health"], responses=responses(503))
    def readyz(request: Request, state: State) -> Any:
        checks: dict[str, str] = {}
        try:
            with state.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except SQLAlchemyError as exc:
            checks["database"] = type(exc).__name__
        try:
            if broker_check is not None:
                broker_check()
            checks["broker"] = "ok"
        except Exception as exc:  # any failure to reach the broker means not ready
            checks["broker"] = type(exc).__name__
        if all(v == "ok" for v in checks.values()):
            return {"status": "ok", "checks": checks}
        return problem_response(request, 503, "Service unavailable", "a dependency is unreachable", checks=checks)

    @app.post(
        "/v1/invoices",
        response_model=schemas.InvoiceStatus,
        status_code=201,
        tags=["invoices"],
        openapi_extra={"requestBody": SUBMIT_BODY},
        responses={
            200: {
                "model": schemas.InvoiceStatus,
                "description": "The same document was submitted before: the existing job.",
            },
            **responses(401, 403, 422),
        },
    )
    async def submit(
        request: Request,
        who: Submitter,
        state: State,
        internal_id: Annotated[str, Query(min_length=1, max_length=50, description="The ERP's id of the document.")],
        provider: Annotated[str, Query(description="mysuite, hacienda, mseller...")] = "mysuite",
        addenda: Annotated[str | None, Query(description="Addenda type to attach (where supported).")] = None,
    ) -> Any:
        """Accept a document for fiscal issue: 201 new, 200 already known, 422 refused."""
        if provider in provider_names() and not who.sees(get_provider(provider).entity):
            raise ProblemError(403, "Forbidden", f"this key does not submit for {provider}'s entity", kind="forbidden")
        if addenda is not None:
            raise ProblemError(
                422, "Document refused", "addenda are not available on this installation", kind="refused"
            )
        payload = await _read_body(request)
        try:
            outcome = await run_in_threadpool(_submit, state, who, payload, internal_id, provider)
        finally:
            del payload
        return JSONResponse(job_status(outcome.job), status_code=201 if outcome.created else 200)

    @app.get(
        "/v1/invoices",
        response_model=schemas.InvoicePage,
        tags=["invoices"],
        responses=responses(401, 403, 422),
    )
    def list_invoices(
        who: Reader,
        state: State,
        job_state: Annotated[str | None, Query(alias="state", description=f"One of {', '.join(STATES)}.")] = None,
        provider: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    ) -> Any:
        """Jobs oldest first, a page at a time (the key's entity only, for entity keys)."""
        if job_state is not None and job_state not in STATES:
            raise ProblemError(422, "Invalid request", f"unknown state {job_state!r}", kind="invalid-request")
        after = _decode_cursor(cursor) if cursor else None
        with state.store.db.session() as session:
            jobs = visible_jobs(
                session, entity=who.entity, state=job_state, provider=provider, after=after, limit=limit
            )
        _audit(state, who, "invoice.list", None, "ok")
        next_cursor = _encode_cursor(jobs[-1]) if len(jobs) == limit else None
        return JSONResponse({"items": [job_status(j) for j in jobs], "next_cursor": next_cursor})

    @app.get(
        "/v1/invoices/{ref}",
        response_model=schemas.InvoiceStatus,
        tags=["invoices"],
        responses=responses(401, 403, 404, 409),
    )
    def invoice(ref: str, who: Reader, state: State) -> Any:
        """A job by its id or the ERP's internal id."""
        job = _visible(state, who, ref, "invoice.read")
        return JSONResponse(job_status(job))

    @app.get(
        "/v1/invoices/{ref}/events",
        response_model=list[schemas.InvoiceEvent],
        tags=["invoices"],
        responses=responses(401, 403, 404, 409),
    )
    def invoice_events(ref: str, who: Reader, state: State) -> Any:
        """The job's history, oldest first."""
        job = _visible(state, who, ref, "invoice.events")
        return JSONResponse([event_view(e) for e in state.store.jobs.events(job.id)])

    @app.post(
        "/v1/invoices/{ref}/retry",
        response_model=schemas.InvoiceStatus,
        tags=["invoices"],
        responses=responses(401, 403, 404, 409),
    )
    def retry_invoice(ref: str, who: Operator, state: State) -> Any:
        """Put a failed or expired job back to work, with this key as the actor."""
        from worker.operator import retry

        job = _visible(state, who, ref, "invoice.retry", audit_ok=False)
        try:
            job = retry(state.store, job.id, state.policy, actor=who.actor)
        except (ValueError, JobNotFound) as exc:
            _audit(state, who, "invoice.retry", job.id, "conflict", str(exc))
            raise ProblemError(409, "Conflict", str(exc), kind="wrong-state") from None
        _audit(state, who, "invoice.retry", job.id, "ok")
        return JSONResponse(job_status(job))

    @app.post(
        "/v1/invoices/{ref}/links",
        response_model=schemas.InvoiceStatus,
        tags=["invoices"],
        responses=responses(401, 403, 404, 409),
    )
    def refresh_invoice_links(ref: str, who: Operator, state: State) -> Any:
        """Ask the provider for fresh download links now."""
        from worker.operator import refresh_now

        job = _visible(state, who, ref, "invoice.links", audit_ok=False)
        try:
            job = refresh_now(state.store, job.id, actor=who.actor)
        except (ValueError, JobNotFound) as exc:
            _audit(state, who, "invoice.links", job.id, "conflict", str(exc))
            raise ProblemError(409, "Conflict", str(exc), kind="wrong-state") from None
        _audit(state, who, "invoice.links", job.id, "ok")
        return JSONResponse(job_status(job))

    @app.get(
        "/v1/invoices/{ref}/files/{kind}",
        tags=["invoices"],
        response_class=FileResponse,
        responses={
            200: {"description": "The archived file.", "content": {"application/octet-stream": {}}},
            **responses(401, 403, 404, 409),
        },
    )
    def invoice_file(ref: str, kind: str, who: Reader, state: State) -> Any:
        """An archived file of the job (xml, pdf), streamed from the archive."""
        job = _visible(state, who, ref, "invoice.file", audit_ok=False)
        found = next((a for a in state.store.jobs.artifacts(job.id) if a.kind == kind), None)
        path = Path(found.path).resolve() if found is not None else None
        if path is None or not path.is_relative_to(state.archive_dir.resolve()) or not path.is_file():
            _audit(state, who, "invoice.file", job.id, "not_found", kind)
            raise ProblemError(404, "Not found", f"no archived {kind} file for this job", kind="not-found")
        _audit(state, who, "invoice.file", job.id, "ok", kind)
        assert found is not None
        return FileResponse(path, media_type=found.content_type, filename=f"{job.internal_id}.{kind}")

    @app.post(
        "/v1/downloads",
        response_model=schemas.DownloadsRegistered,
        status_code=201,
        tags=["downloads"],
        responses=responses(400, 401, 403, 422, 502, 503),
    )
    def request_sat_download(body: schemas.DownloadRequest, who: Submitter, state: State) -> Any:
        """Register a SAT bulk download once, like `einvoice downloads request`; one job per SAT request.

        A 503 means the registration may or may not have reached SAT: look at `GET /v1/downloads`
        before asking again, or SAT may count the same request twice.
        """
        rfc = body.rfc.strip().upper()
        target = rfc[:100]
        if not who.sees(rfc):
            _audit(state, who, "download.request", target, "forbidden")
            raise ProblemError(403, "Forbidden", "this key does not request downloads for that RFC", kind="forbidden")
        try:
            start, end = wall_time(body.start), wall_time(body.end)
            result = request_download(
                state.store,
                rfc=rfc,
                start=start,
                end=end,
                direction=body.direction,
                kind=body.kind,
                service=body.service,
            )
        except RuleViolation as exc:
            _audit(state, who, "download.request", target, "refused", exc.rule.value)
            detail = f"refused by rule {exc.rule.value}: {exc.message}"
            raise ProblemError(422, "Download refused", detail, kind="rule-violation", rule=exc.rule.value) from None
        except InvalidInput as exc:
            _audit(state, who, "download.request", target, "refused", str(exc))
            raise ProblemError(422, "Invalid request", str(exc), kind="invalid-request") from None
        except TransientError as exc:
            _audit(state, who, "download.request", target, "unavailable", str(exc))
            detail = f"{exc} (temporary: check GET /v1/downloads before trying again)"
            raise ProblemError(503, "Service unavailable", detail, kind="provider-unavailable") from None
        except ProviderError as exc:
            _audit(state, who, "download.request", target, "provider_error", str(exc))
            raise ProblemError(502, "Provider error", str(exc), kind="provider-error") from None
        rows = [download_view(state.store, job) for job in [*result.split, *result.jobs]]
        if not result.jobs:
            _audit(state, who, "download.request", target, "refused", "; ".join(result.refused))
            raise ProblemError(
                422, "Download refused", "SAT refused every request", kind="sat-refused", refused=result.refused
            )
        for row in rows:
            _audit(state, who, "download.request", row["id"], "created")
        return JSONResponse({"requests": rows, "refused": result.refused}, status_code=201)

    @app.get(
        "/v1/downloads",
        response_model=list[schemas.DownloadStatus],
        tags=["downloads"],
        responses=responses(401, 403, 422),
    )
    def list_downloads(
        who: Reader,
        state: State,
        job_state: Annotated[
            str | None, Query(alias="state", description=f"One of {', '.join(DOWNLOAD_STATES)}.")
        ] = None,
    ) -> Any:
        """Download requests oldest first, like `einvoice downloads list` (the key's RFC only, for entity keys)."""
        if job_state is not None and job_state not in DOWNLOAD_STATES:
            raise ProblemError(422, "Invalid request", f"unknown state {job_state!r}", kind="invalid-request")
        jobs = state.store.jobs.list_jobs(state=job_state, kind=DOWNLOAD_KIND)
        _audit(state, who, "download.list", None, "ok")
        return JSONResponse([download_view(state.store, job) for job in jobs if who.sees(job.entity)])

    @app.get(
        "/v1/downloads/{job_id}",
        response_model=schemas.DownloadStatus,
        tags=["downloads"],
        responses=responses(401, 403, 404),
    )
    def download_status(job_id: str, who: Reader, state: State) -> Any:
        """One download request with its packages, like `einvoice downloads status`."""
        try:
            job = state.store.jobs.get(job_id)
        except JobNotFound:
            job = None
        # Another entity's request answers like a missing one, so its id does not leak.
        if job is None or job.kind != DOWNLOAD_KIND or not who.sees(job.entity):
            _audit(state, who, "download.read", job_id[:100], "not_found")
            raise ProblemError(404, "Not found", "no such download request", kind="not-found")
        _audit(state, who, "download.read", job.id, "ok")
        return JSONResponse(download_view(state.store, job))

    @app.get(
        "/v1/cfdi",
        response_model=list[schemas.CfdiEntry],
        tags=["cfdi"],
        responses=responses(401, 403, 422),
    )
    def cfdi(
        who: Reader,
        state: State,
        direction: Literal["issued", "received"] | None = None,
        start: Annotated[
            str | None, Query(alias="from", description="Issued at or after (YYYY-MM-DD[ HH:MM:SS], Mexico City time).")
        ] = None,
        end: Annotated[str | None, Query(alias="to", description="Issued before.")] = None,
        rfc: Annotated[str | None, Query(description="Issuer or receiver RFC.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Any:
        """Indexed CFDI by issue time, like `einvoice cfdi list`; an entity key sees its RFC's only."""
        try:
            issued_from = wall_time(start) if start is not None else None
            issued_to = wall_time(end) if end is not None else None
        except InvalidInput as exc:
            raise ProblemError(422, "Invalid request", str(exc), kind="invalid-request") from None
        rows = list_cfdi(
            state.store.engine,
            direction=direction,
            issued_from=issued_from,
            issued_to=issued_to,
            rfc=rfc,
            limit=limit,
            entity=who.entity,
        )
        _audit(state, who, "cfdi.list", None, "ok")
        return JSONResponse([cfdi_json(row) for row in rows])

    @app.get(
        "/v1/providers", response_model=list[schemas.ProviderPause], tags=["providers"], responses=responses(401, 403)
    )
    def providers(who: Reader, state: State) -> Any:
        """Paused providers (credentials refused, or unreachable)."""
        _audit(state, who, "provider.list", None, "ok")
        return JSONResponse([pause_view(p) for p in state.store.pauses.provider_pauses()])

    @app.post(
        "/v1/providers/{provider}/resume",
        response_model=list[schemas.ProviderPause],
        tags=["providers"],
        responses=responses(401, 403, 404),
    )
    def resume(provider: str, who: Operator, state: State) -> Any:
        """Let calls to the provider start again; returns the pause lifted (empty if there was none)."""
        if provider not in provider_names():
            raise ProblemError(404, "Not found", f"unknown provider {provider!r}", kind="not-found")
        lifted = state.store.pauses.resume_provider(provider)
        _audit(state, who, "provider.resume", provider, "ok" if lifted else "not_paused")
        return JSONResponse([pause_view(lifted)] if lifted else [])

    @app.post(
        "/v1/webhooks/deliveries/{delivery_id}/replay",
        response_model=schemas.Replayed,
        tags=["webhooks"],
        responses=responses(401, 403, 404, 409),
    )
    def replay_delivery(delivery_id: str, who: Operator, state: State) -> Any:
        """Send a webhook delivery again (a dead letter, or one the receiver lost)."""
        try:
            with state.store.db.session() as session:
                row = replay(session, delivery_id, actor=who.actor)
                result = {"id": row.id, "state": row.state}
        except ReplayRefused as exc:
            raise ProblemError(409, "Conflict", str(exc), kind="subscription-disabled") from None
        except LookupError:
            raise ProblemError(404, "Not found", f"no delivery {delivery_id}", kind="not-found") from None
        return JSONResponse(result)

    return app


async def _read_body(request: Request) -> bytes:
    """The body as it arrives, refused as soon as it passes the limit, held once in memory.

    BytesIO grows its one buffer in place, and `getvalue()` hands that buffer over without a copy
    once writing is done, so a 40 MB document costs 40 MB here, not 80.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_PAYLOAD_BYTES:
        raise ProblemError(422, "Document refused", _too_large(int(declared)), kind="refused")
    buffer = io.BytesIO()
    async for chunk in request.stream():
        if buffer.tell() + len(chunk) > MAX_PAYLOAD_BYTES:
            raise ProblemError(422, "Document refused", _too_large(buffer.tell() + len(chunk)), kind="refused")
        buffer.write(chunk)
    return buffer.getvalue()


def _submit(state: ApiState, who: Principal, payload: bytes, internal_id: str, provider: str) -> Enqueued:
    """The producer and the audit row, off the event loop: a commit waits on the disk.

    A new job's audit row is written in its own transaction; only the rarer answers audit apart.
    """
    try:
        outcome = enqueue(
            state.store,
            payload,
            internal_id,
            provider=provider,
            policy=state.policy,
            actor=who.actor,
            audit_action="invoice.submit",
        )
    except ValueError as exc:  # InvalidInput and every other refusal of the producer
        _audit(state, who, "invoice.submit", internal_id, "refused", str(exc))
        raise ProblemError(422, "Document refused", str(exc), kind="refused") from None
    if not outcome.created:
        _audit(state, who, "invoice.submit", outcome.job.id, "existing")
    return outcome


def _too_large(size: int) -> str:
    return f"document is at least {size:,} bytes; the largest accepted is {MAX_PAYLOAD_BYTES:,} bytes (40 MB)"


def _visible(state: ApiState, who: Principal, ref: str, action: str, *, audit_ok: bool = True) -> Job:
    try:
        with state.store.db.session() as session:
            job = resolve_visible(session, ref, who.entity)
    except AmbiguousRef as exc:
        raise ProblemError(409, "Conflict", str(exc), kind="ambiguous") from None
    if job is None:
        _audit(state, who, action, ref[:100], "not_found")
        raise ProblemError(404, "Not found", "no such invoice", kind="not-found")
    if audit_ok:
        _audit(state, who, action, job.id, "ok")
    return job


def _audit(
    state: ApiState, who: Principal, action: str, target: str | None, outcome: str, detail: str | None = None
) -> None:
    with state.store.db.connection() as conn:
        audit(conn, actor=who.actor, action=action, target=target, outcome=outcome, detail=detail)


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when, str(job_id)
    except (ValueError, TypeError, binascii.Error):
        raise ProblemError(
            422, "Invalid request", "the cursor is not one this API gave out", kind="invalid-cursor"
        ) from None
