"""Every kind of job, declared in one place: its state machine and the step that runs in each state.

Read a declaration top to bottom to know what a job of that kind goes through. `outcomes` lists
what each step may conclude; the runner treats anything else as a bug and records it on the job.
"""

from __future__ import annotations

from models import AddendaState, DownloadState, JobState
from models.states import ADDENDA as ADDENDA_MACHINE
from models.states import DOWNLOAD as DOWNLOAD_MACHINE
from models.states import INVOICE as INVOICE_MACHINE
from tasks import addenda, downloads, invoice
from tasks.outcomes import Errored, Moved, Stayed
from tasks.workflow import StepSpec, Workflow

SUBMIT_QUEUE = "submit"
"""Uploads of up to 40 MB, apart so that they never starve polling."""
POLL_QUEUE = "poll"
"""Small, many: status queries, retrieves, link refreshes, sweeps."""

INVOICE = Workflow(
    kind="invoice",
    machine=INVOICE_MACHINE,
    steps=(
        # queued -> submitted (async provider) or -> submitted -> issued [-> retrieved] (sync answer)
        StepSpec(
            name="einvoice.submit",
            state=JobState.QUEUED,
            queue=SUBMIT_QUEUE,
            run=invoice.submit,
            outcomes=(Moved, Errored),
            lease_by_size=True,
            count_attempt=True,
            with_payload=True,
            deadline=True,
            fail_to=JobState.FAILED,
            expire_to=JobState.EXPIRED,
            resend_guard=True,
            gather=True,
        ),
        # submitted -> submitted (pending poll) | failed | issued [-> retrieved, files fetched inline]
        StepSpec(
            name="einvoice.verify",
            state=JobState.SUBMITTED,
            queue=POLL_QUEUE,
            run=invoice.verify,
            outcomes=(Moved, Stayed, Errored),
            batch=True,
            lease_by_size=True,
            deadline=True,
            fail_to=JobState.FAILED,
            expire_to=JobState.EXPIRED,
        ),
        # issued -> retrieved, when the verify that saw it issued could not fetch the files
        StepSpec(
            name="einvoice.retrieve",
            state=JobState.ISSUED,
            queue=POLL_QUEUE,
            run=invoice.retrieve,
            outcomes=(Moved, Errored),
            lease_by_size=True,
            count_attempt=True,
        ),
        # retrieved -> retrieved with fresh links, while inside the refresh window
        StepSpec(
            name="einvoice.refresh_links",
            state=JobState.RETRIEVED,
            queue=POLL_QUEUE,
            run=invoice.refresh_links,
            outcomes=(Stayed, Errored),
        ),
    ),
    # An invoice's addenda waits, unscheduled, for the stamped XML; entering `retrieved` wakes it.
    wakes_children_in=frozenset({JobState.RETRIEVED}),
)

ADDENDA = Workflow(
    kind="addenda",
    machine=ADDENDA_MACHINE,
    steps=(
        # waiting -> attached | failed; the invoice's own state never changes because of it
        StepSpec(
            name="einvoice.addenda",
            state=AddendaState.WAITING,
            queue=POLL_QUEUE,
            run=addenda.attach,
            outcomes=(Moved, Errored),
            with_payload=True,
            fail_to=AddendaState.FAILED,
            guards_logins=True,
        ),
    ),
)

DOWNLOAD = Workflow(
    kind="download_request",
    machine=DOWNLOAD_MACHINE,
    steps=(
        # registered -> registered (pending, long schedule) | ready | empty | rejected | failed
        #   | expired (SAT's, or no answer within the maximum age) | split (5003: halves as children)
        StepSpec(
            name="einvoice.download_poll",
            state=DownloadState.REGISTERED,
            queue=POLL_QUEUE,
            run=downloads.poll,
            outcomes=(Moved, Stayed, Errored),
            deadline=True,
            fail_to=DownloadState.FAILED,
            expire_to=DownloadState.EXPIRED,
        ),
        # ready -> downloaded: each package fetched once, verified, its sha256 kept
        StepSpec(
            name="einvoice.download_fetch",
            state=DownloadState.READY,
            queue=SUBMIT_QUEUE,
            run=downloads.fetch,
            outcomes=(Moved, Errored),
            fail_to=DownloadState.FAILED,
        ),
        # downloaded -> indexed: each package streamed into the cfdi table
        StepSpec(
            name="einvoice.download_index",
            state=DownloadState.DOWNLOADED,
            queue=SUBMIT_QUEUE,
            run=downloads.index,
            outcomes=(Moved, Errored),
            fail_to=DownloadState.FAILED,
        ),
    ),
)

WORKFLOWS: dict[str, Workflow] = {INVOICE.kind: INVOICE, ADDENDA.kind: ADDENDA, DOWNLOAD.kind: DOWNLOAD}


def workflow(kind: str) -> Workflow:
    try:
        return WORKFLOWS[kind]
    except KeyError:
        raise ValueError(f"no workflow for job kind {kind!r}") from None


def all_steps() -> list[StepSpec]:
    return [spec for wf in WORKFLOWS.values() for spec in wf.steps]


_KIND_OF_STEP = {spec.name: wf.kind for wf in WORKFLOWS.values() for spec in wf.steps}


def kind_of(spec: StepSpec) -> str:
    """The kind of job a step belongs to (a wake-up names a step and a provider, not a job)."""
    return _KIND_OF_STEP[spec.name]
