"""Keep a copy of every issued document's files, because the provider's links die after a few days.

Files land at ARCHIVE_DIR/<entity>/<year>/<fiscal id>--<job id>.<kind>.<ext>. The fiscal id is
there for people browsing the folder, sanitised and bounded because it comes from outside; it
cannot make a name unique, since different ids can sanitise to one text (`..` and `...` both
become `unknown`), so the job id, ours and unique, is always part of the name.

An archived file is never replaced. Writing the same bytes again (a step redone after a crash) is
accepted as done. Different bytes for the same job and kind (MYSuite's links serve a ZIP whose
member timestamps change with every download) are kept beside the first file, under a name that
adds their sha256 prefix, so neither copy is lost and the recorded sha256 always matches the file it
names. Every write goes to a temporary file in the target folder, is fsynced, is put in place
without replacing anything (a hard link, then the temporary name is removed), and the folder is
fsynced, so a crash leaves either no file or the whole file. Invoices carry personal data: files
are 0600 and the folders created here 0700.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from models import Job
from providers.base import PermanentError, Provider
from providers.links import PDF, XML, ZIP, UnexpectedContent

log = logging.getLogger("einvoice.archive")

EXTENSIONS = {"xml": "xml", "pdf": "pdf", "respuesta": "xml", "addenda": "xml"}
ACCEPTED_TYPES = {"xml": {XML, ZIP}, "pdf": {PDF, ZIP}, "respuesta": {XML}}
"""What each kind of link may serve: the document itself or, as MYSuite's seed says, a ZIP of it."""
MAX_FISCAL_PART = 64
MAX_ENTITY_PART = 64
FILE_MODE = 0o600
FOLDER_MODE = 0o700
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 1 << 20


class ArchiveConflict(PermanentError):
    """Both the file's name and its sha256-named alternative hold other bytes: nothing is replaced.

    A `PermanentError` so that the step records it on the job and leaves the job where it is; an
    operator has to look at the two files.
    """


@dataclass(frozen=True)
class Archived:
    kind: str
    path: Path
    sha256: str
    size: int
    content_type: str


def _safe(part: str, limit: int) -> str:
    """Fiscal ids and entities come from outside: keep them from escaping or overflowing a name."""
    cleaned = _UNSAFE.sub("_", part).strip("._")[:limit].strip("._")
    return cleaned or "unknown"


def folder_for(root: Path, job: Job) -> Path:
    year = job.doc_year if job.doc_year else job.created_at.year
    return root / _safe(job.entity, MAX_ENTITY_PART) / _safe(str(year), 4)


def file_name(job: Job, kind: str, extension: str) -> str:
    fiscal = job.doc_fiscal_id or job.doc_guid or job.provider_request_id
    stem = _safe(job.id, 64) if fiscal is None else f"{_safe(fiscal, MAX_FISCAL_PART)}--{_safe(job.id, 64)}"
    return f"{stem}.{_safe(kind, 16)}.{extension}"


def sniff(head: bytes) -> str:
    stripped = head.lstrip()
    if stripped.startswith(b"%PDF"):
        return PDF
    if stripped.startswith(b"PK"):
        return ZIP
    if stripped.startswith(b"<"):
        return XML
    return "application/octet-stream"


def write_bytes(root: Path, job: Job, kind: str, content: bytes) -> Archived:
    """Archive content that came inline in an answer (sync CFDI, Hacienda's respuesta)."""
    content_type = sniff(content[:16])
    folder = _make_folder(root, job)
    temporary = folder / f".{uuid.uuid4().hex}.part"
    digest = hashlib.sha256(content).hexdigest()
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        path = _place(temporary, folder, file_name(job, kind, _extension(kind, content_type)), digest)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(folder)
    return Archived(kind, path, digest, len(content), content_type)


def download(root: Path, job: Job, kind: str, url: str, provider: Provider) -> Archived:
    """Fetch a link into the archive; the provider checks the link and the body (`providers.links`).

    The kind adds one check the provider cannot make: a PDF link that serves XML (or the other way
    round) is refused, whatever the bytes are.
    """
    folder = _make_folder(root, job)
    temporary = folder / f".{uuid.uuid4().hex}.download"
    try:
        result = provider.download(url, temporary)
        accepted = ACCEPTED_TYPES.get(kind)
        if accepted is not None and result.content_type not in accepted:
            raise UnexpectedContent(f"the {kind} link served {result.content_type}")
        os.chmod(temporary, FILE_MODE)
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        name = file_name(job, kind, _extension(kind, result.content_type))
        path = _place(temporary, folder, name, result.sha256)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(folder)
    return Archived(kind, path, result.sha256, result.size, result.content_type)


def _place(temporary: Path, folder: Path, name: str, digest: str) -> Path:
    """Put the written file under `name`, or beside it when another file already holds that name."""
    dest = folder / name
    if _link(temporary, dest) or _sha256(dest) == digest:
        return dest
    stem, _, extension = name.rpartition(".")
    beside = folder / f"{stem}.{digest[:16]}.{extension}"
    if _link(temporary, beside) or _sha256(beside) == digest:
        log.warning("archive: %s already holds other bytes; this copy is kept as %s", dest.name, beside.name)
        return beside
    raise ArchiveConflict(f"archive: {dest.name} and {beside.name} already hold other bytes")


def _link(source: Path, dest: Path) -> bool:
    """Create `dest` as `source` unless it exists: a rename that can never replace a file."""
    try:
        os.link(source, dest)
    except FileExistsError:
        return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as existing:
        while chunk := existing.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _make_folder(root: Path, job: Job) -> Path:
    """Create the missing folders down to the job's, each 0700 whatever the umask."""
    folder = folder_for(root, job)
    if folder.is_dir():
        return folder  # one stat: every file after a folder's first
    root.parent.mkdir(parents=True, exist_ok=True)
    levels = [root]
    for part in folder.relative_to(root).parts:
        levels.append(levels[-1] / part)
    for path in levels:
        try:
            path.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue
        os.chmod(path, FOLDER_MODE)
    return folder


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _extension(kind: str, content_type: str) -> str:
    if content_type == ZIP:
        return "zip"
    if content_type == PDF:
        return "pdf"
    return EXTENSIONS.get(kind, "bin")
