"""The JSON shapes of the interface contract (`status --json`, `list --json`, `events --json`), and
text made safe for a terminal."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from pathlib import PurePath
from typing import Any

from models import Artifact, Event, Job, PauseInfo
from providers.base import CONTROL_CATEGORIES

"""Characters that act on a terminal or on how text reads rather than showing: C0/C1 controls
(escape sequences, carriage return), invisible format characters (bidi overrides), lone surrogates,
line and paragraph separators."""


def terminal_text(text: str) -> str:
    """`text` with every control character written as its Python escape (ESC as \\x1b).

    Ids and messages come from ERPs and providers: printed raw, an escape sequence could recolour or
    rewrite what an operator reads (hide an error, fake a state), and a carriage return could
    overwrite a line. JSON output is left exact: it is read by programs, not terminals.
    """
    if not any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in text):
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in CONTROL_CATEGORIES else ch
        for ch in text
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def addenda_view(addenda: Job, artifact: Artifact | None = None) -> dict[str, Any]:
    """An invoice's addenda as `status` shows it. Its history is its own (`events ADDENDA_ID`): the
    invoice's events stay the history of its fiscal state alone."""
    message: str | None
    if addenda.state == "attached":
        message = f"attached: {PurePath(artifact.path).name}" if artifact is not None else "attached"
    elif addenda.state == "failed":
        message = addenda.error_message
    else:
        message = addenda.error_message or "waiting for the stamped invoice"
    return {
        "id": addenda.id,
        "type": (addenda.doc_extra or {}).get("addenda_type"),
        "state": addenda.state,
        "message": message,
        "artifact": artifact.path if artifact is not None else None,
        "attempts": addenda.attempts,
    }


def job_status(job: Job, addenda: dict[str, Any] | None = None) -> dict[str, Any]:
    error = None
    if job.error_message and job.state in ("failed", "invalid", "expired"):
        error = {"code": job.error_code, "message": job.error_message, "class": job.error_class}
    return {
        "id": job.id,
        "provider": job.provider,
        "entity": job.entity,
        "internal_id": job.internal_id,
        "state": job.state,
        "provider_request_id": job.provider_request_id,
        "adopted": job.adopted,
        "size_bytes": job.size_bytes,
        "document": {
            "fiscal_id": job.doc_fiscal_id or job.doc_guid,
            "guid": job.doc_guid,
            "year": job.doc_year,
            "batch": job.doc_batch,
            "serial": job.doc_serial,
            **(job.doc_extra or {}),
        },
        "links": {"xml": job.xml_url, "pdf": job.pdf_url, "expires_at": _iso(job.links_expires_at)},
        "addenda": addenda,
        "error": error,
        "attempts": job.attempts,
        "polls": job.polls,
        "created_at": _iso(job.created_at),
        "submitted_at": _iso(job.submitted_at),
        "issued_at": _iso(job.issued_at),
        "updated_at": _iso(job.updated_at),
        "next_attempt_at": _iso(job.next_attempt_at),
    }


def event_view(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": _iso(event.at),
        "kind": event.kind,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "actor": event.actor,
        "attempt": event.attempt,
        "error_class": event.error_class,
        "provider_code": event.provider_code,
        "message": event.message,
    }


def pause_view(pause: PauseInfo) -> dict[str, Any]:
    return {
        "provider": pause.provider,
        "kind": pause.kind,
        "reason": pause.reason,
        "since": _iso(pause.since),
        "until": _iso(pause.until),
        "probes": pause.probes,
    }
