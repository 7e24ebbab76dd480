"""Keep a copy of every issued document's files, because the provider's links die after a few days.

Files land at ARCHIVE_DIR/<entity>/<year>/<fiscal id>.<kind>.<ext>, written to a temporary name and
renamed, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from models import Job
from providers.base import Provider

EXTENSIONS = {"xml": "xml", "pdf": "pdf", "respuesta": "xml"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Archived:
    kind: str
    path: Path
    sha256: str
    size: int
    content_type: str


def _safe(part: str) -> str:
    """Fiscal ids and entities come from outside: keep them from escaping the archive folder."""
    cleaned = _UNSAFE.sub("_", part).strip("._")
    return cleaned or "unknown"


def target(root: Path, job: Job, kind: str, extension: str) -> Path:
    year = str(job.doc_year) if job.doc_year else str(job.created_at.year)
    fiscal_id = job.doc_guid or job.provider_request_id or job.id
    return root / _safe(job.entity) / _safe(year) / f"{_safe(fiscal_id)}.{kind}.{extension}"


def sniff(head: bytes) -> str:
    stripped = head.lstrip()
    if stripped.startswith(b"%PDF"):
        return "application/pdf"
    if stripped.startswith(b"PK"):
        return "application/zip"
    if stripped.startswith(b"<"):
        return "application/xml"
    return "application/octet-stream"


def write_bytes(root: Path, job: Job, kind: str, content: bytes) -> Archived:
    content_type = sniff(content[:16])
    dest = target(root, job, kind, _extension(kind, content_type))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(content)
    os.replace(tmp, dest)
    return Archived(kind, dest, hashlib.sha256(content).hexdigest(), len(content), content_type)


def download(root: Path, job: Job, kind: str, url: str, provider: Provider) -> Archived:
    dest = target(root, job, kind, EXTENSIONS.get(kind, "bin"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    result = provider.download(url, tmp)
    final = dest.with_suffix("." + _extension(kind, result.content_type))
    os.replace(tmp, final)
    return Archived(kind, final, result.sha256, result.size, result.content_type)


def _extension(kind: str, content_type: str) -> str:
    if content_type == "application/zip":
        return "zip"
    if content_type == "application/pdf":
        return "pdf"
    return EXTENSIONS.get(kind, "bin")
