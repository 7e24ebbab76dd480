"""The addenda step of an invoice: the stamped CFDI goes to Prodigia with the ERP's data, and comes
back with the retailer's `cfdi:Addenda`, which is archived beside the original.

The addenda is a job of its own (kind `addenda`), a child of its invoice, created with it and made
due when the invoice reaches `retrieved`. Whatever happens here, the invoice's fiscal state stays
as it is: an addenda that cannot be attached fails alone, with the reason.

Event kinds `addenda.attached` and `addenda.failed` mark the conclusive transitions, under the
names the webhooks publish.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from models import AddendaState, ArtifactRecord, Claimed, ErrorInfo, Step
from providers.base import InvalidPayload, PermanentError
from providers.prodigia.inputs import MAX_CFDI_BYTES
from tasks import archive
from tasks.outcomes import Crashed, Moved, Outcome
from tasks.workflow import StepContext, one_by_one

log = logging.getLogger("einvoice.tasks")

ARTIFACT = "addenda"
"""Artifact kind of the CFDI with the addenda attached (archived as `<fiscal id>.addenda.xml`)."""
ATTACHED_EVENT = "addenda.attached"
FAILED_EVENT = "addenda.failed"
TYPE_KEY = "addenda_type"
"""Where the addenda job keeps the requested type (`doc_extra`)."""


class StampedXmlUnusable(PermanentError):
    """The invoice's archived XML cannot be read as one CFDI: retrying will not change the file."""


def stamped_cfdi(path: Path, limit: int = MAX_CFDI_BYTES) -> bytes:
    """The CFDI bytes of an archived XML artifact, which MYSuite links deliver as a one-file ZIP.

    Nothing is extracted to disk, so member names never matter; sizes are checked against what is
    actually read (a ZIP header may lie), so a bomb cannot fill memory.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
        if not head.startswith(b"PK"):
            if path.stat().st_size > limit:
                raise StampedXmlUnusable(f"the stamped XML is larger than {limit} bytes")
            return path.read_bytes()
        with zipfile.ZipFile(path) as bundle:
            members = [m for m in bundle.infolist() if not m.is_dir() and m.filename.lower().endswith(".xml")]
            if len(members) != 1:
                raise StampedXmlUnusable(f"the archived ZIP holds {len(members)} XML files, not one")
            with bundle.open(members[0]) as member:
                content = member.read(limit + 1)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise StampedXmlUnusable(f"the archived stamped XML cannot be read ({type(exc).__name__})") from None
    if len(content) > limit:
        raise StampedXmlUnusable(f"the stamped XML is larger than {limit} bytes")
    return content


def _failed(error: PermanentError, *, answered: bool) -> Moved:
    info = ErrorInfo(error.error_class.value, str(error)[:2000], error.code)
    return Moved((Step(AddendaState.FAILED, info.message, error=info, kind=FAILED_EVENT),), answered=answered)


@one_by_one
def attach(ctx: StepContext, claimed: Claimed) -> Outcome:
    """Attach the addenda to the invoice's stamped XML and keep the result as its own artifact.

    Refused credentials and maintenance propagate, so the runner pauses or backs off; a permanent
    refusal (bad data, a result that altered the signed part) fails the addenda with the reason.
    """
    job = claimed.job
    store = ctx.services.store
    if claimed.payload is None or job.parent_id is None:
        return Crashed(LookupError(f"addenda job {job.id} has no data or no invoice"))
    invoice = store.jobs.get(job.parent_id)
    addenda_type = (job.doc_extra or {}).get(TYPE_KEY, "")
    try:
        kept = {a.kind: a for a in store.jobs.artifacts(invoice.id)}
        if "xml" not in kept:
            raise StampedXmlUnusable("the invoice has no archived stamped XML")
        cfdi = stamped_cfdi(Path(kept["xml"].path))
    except PermanentError as exc:
        return _failed(exc, answered=False)
    try:
        attached = ctx.services.addenda().attach(addenda_type, claimed.payload, cfdi)
    except PermanentError as exc:
        log.warning("addenda job=%s internal_id=%s failed: %s", job.id, job.internal_id, exc)
        # InvalidPayload is raised by the checks before the request: no call, no login.
        return _failed(exc, answered=not isinstance(exc, InvalidPayload))
    saved = archive.write_bytes(ctx.services.archive_dir, invoice, ARTIFACT, attached)
    record = ArtifactRecord(saved.kind, str(saved.path), saved.sha256, saved.size, saved.content_type)
    message = f"{addenda_type} addenda attached; archived as {saved.path.name}"
    return Moved((Step(AddendaState.ATTACHED, message, kind=ATTACHED_EVENT),), artifacts=(record,))
