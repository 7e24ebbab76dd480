"""Keep a copy of every issued document's files, because the provider's links die after a few days.

Files land at ARCHIVE_DIR/<entity>/<year>/<fiscal id>.<kind>.<ext>, written to a temporary name and
renamed, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from models import Job
from providers.base import Provider, TransientError

EXTENSIONS = {"xml": "xml", "pdf": "pdf", "respuesta": "xml", "addenda": "xml"}
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
    try:
        check_intact(tmp, result.content_type)
    except TransientError:
        tmp.unlink(missing_ok=True)
        raise
    final = dest.with_suffix("." + _extension(kind, result.content_type))
    os.replace(tmp, final)
    return Archived(kind, final, result.sha256, result.size, result.content_type)


def check_intact(path: Path, content_type: str) -> None:
    """Refuse a download that arrived whole at the HTTP level but is not a whole file.

    A proxy or a failing server can answer 200 with a cut or garbled body; archiving it would keep
    a broken copy as the only one once the links expire. ZIP members carry CRCs and a PDF ends with
    %%EOF, so both are checked; a failure is transient and the download is tried again.
    """
    if content_type == "application/zip":
        try:
            with zipfile.ZipFile(path) as bundle:
                damaged = bundle.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            damaged = "archive"
        if damaged is not None:
            raise TransientError("downloaded ZIP is damaged")
    elif content_type == "application/pdf":
        with path.open("rb") as pdf:
            pdf.seek(max(0, path.stat().st_size - 1024))
            if b"%%EOF" not in pdf.read():
                raise TransientError("downloaded PDF is cut short")


def _extension(kind: str, content_type: str) -> str:
    if content_type == "application/zip":
        return "zip"
    if content_type == "application/pdf":
        return "pdf"
    return EXTENSIONS.get(kind, "bin")
