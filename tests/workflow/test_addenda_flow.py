"""The addenda of an invoice, in-process: created with the invoice, woken by `retrieved`, attached or
failed without touching the invoice, and the login guard that keeps Prodigia from locking the account.

The addenda service is scripted, but its answers go through the real signed-part check, so a
tampering service is refused here exactly as in production.
"""

from __future__ import annotations

import io
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import pytest
from lxml import etree

from models import BreakerPolicy, ChildJob, Job, Store, make_engine
from models.pauses import AUTH_PAUSE, LOGINS_CONFIRMED, Health
from providers.base import AuthError, PermanentError, TransientError
from providers.prodigia import verify_attached
from sandbox.prodigia.addendas import attach as sandbox_attach
from sandbox.prodigia.addendas import generate
from tasks.runner import run_step
from tasks.services import Services
from tests.prodigia.conftest import stamped_cfdi
from tests.workflow.conftest import STEPS, Flow, Sent

_POLICY = BreakerPolicy(open_after_failures=3, probe_base=timedelta(seconds=10), probe_cap=timedelta(seconds=60))
DATOS = "Soriana\nProveedor|12345\nRemision|R-0001\nFolioPedido|P-77\nCantidad|3\n"
CFDI = stamped_cfdi()


@dataclass
class ScriptedAddendas:
    """Prodigia's procesarAdjuntarAddenda: scripted answers (exceptions, or a document that goes
    through the real signed-part check); by default the sandbox's honest attach."""

    answers: deque[object] = field(default_factory=deque)
    calls: list[tuple[str, str, bytes]] = field(default_factory=list)
    during_call: Callable[[], None] | None = None

    def attach(self, addenda_type: str, datos: str | bytes, cfdi_xml: bytes) -> bytes:
        text = datos.decode() if isinstance(datos, bytes) else datos
        self.calls.append((addenda_type, text, cfdi_xml))
        if self.during_call is not None:
            hook, self.during_call = self.during_call, None
            hook()
        answer = self.answers.popleft() if self.answers else None
        if isinstance(answer, BaseException):
            raise answer
        returned = answer if isinstance(answer, bytes) else sandbox_attach(cfdi_xml.decode(), generate(text))
        return verify_attached(cfdi_xml, returned)


@pytest.fixture
def addendas(flow: Flow) -> ScriptedAddendas:
    service = ScriptedAddendas()
    flow.services.addenda = lambda: service
    flow.provider.files["xml"] = CFDI
    return service


def enqueue_with_addenda(flow: Flow, internal_id: str, datos: str = DATOS, kind: str = "soriana") -> Job:
    job, created = flow.store.jobs.create_job(
        provider=flow.provider.name,
        entity=flow.provider.entity,
        internal_id=internal_id,
        payload=b"<doc/>",
        actor="test",
        deadline=timedelta(hours=1),
        dispatch_grace=timedelta(seconds=30),
        child=ChildJob("addenda", "waiting", "prodigia", datos.encode(), {"addenda_type": kind}),
    )
    assert created
    flow.outbox.append(Sent("einvoice.submit", "submit", [job.id], 0.0))
    return job


def child_of(flow: Flow, job: Job) -> Job:
    return flow.store.jobs.addendas([job.id])[job.id]


def run_addenda(flow: Flow) -> dict[str, str]:
    """What a sweep would dispatch now, run: the due addendas."""
    flow.sweep()
    due = [m for m in flow.outbox if m.task == "einvoice.addenda"]
    flow.outbox[:] = [m for m in flow.outbox if m.task != "einvoice.addenda"]
    results: dict[str, str] = {}
    for message in due:
        results.update(flow.run(message.task, message.job_ids))
    return results


def events(flow: Flow, job_id: str) -> list[tuple[str, str | None, str | None]]:
    return flow.kinds(job_id)


def test_addenda_waits_unscheduled_until_the_invoice_is_retrieved_then_is_attached_and_archived(
    flow: Flow, addendas: ScriptedAddendas
) -> None:
    invoice = enqueue_with_addenda(flow, "AD-1")
    addenda = child_of(flow, invoice)
    assert addenda.state == "waiting" and addenda.next_attempt_at is None and addenda.provider == "prodigia"
    assert (addenda.entity, addenda.internal_id) == (invoice.entity, invoice.internal_id)
    assert flow.store.jobs.payload(addenda.id) == DATOS.encode()
    flow.clock.advance(60)
    flow.sweep()
    assert [m.task for m in flow.outbox] == ["einvoice.submit"] * 2, "an addenda went out before its invoice"
    flow.outbox.pop()

    flow.deliver(limit=1)  # submit -> submitted
    assert flow.job(invoice.id).state == "submitted" and child_of(flow, invoice).next_attempt_at is None
    flow.deliver(limit=1)  # verify: issued and retrieved in one record, which wakes the addenda
    assert flow.job(invoice.id).state == "retrieved"
    woken = child_of(flow, invoice)
    assert woken.next_attempt_at == flow.clock.now

    assert run_addenda(flow) == {addenda.id: "attached"}
    done = child_of(flow, invoice)
    assert done.state == "attached" and done.next_attempt_at is None
    assert events(flow, addenda.id) == [("transition", None, "waiting"), ("addenda.attached", "waiting", "attached")]
    (call,) = addendas.calls
    assert call == ("soriana", DATOS, CFDI)
    kept = {a.kind: a for a in flow.store.jobs.artifacts(addenda.id)}
    path = Path(kept["addenda"].path)
    retrieved = flow.job(invoice.id)
    assert path.name == f"{retrieved.doc_guid}--{retrieved.id}.addenda.xml"
    root = etree.fromstring(path.read_bytes())
    assert etree.QName(root[-1]).localname == "Addenda"
    # The original stamped XML is kept as it was, and the invoice's history is its own.
    original = {a.kind: a for a in flow.store.jobs.artifacts(invoice.id)}["xml"]
    assert Path(original.path).read_bytes() == CFDI
    assert [to for _, _, to in flow.kinds(invoice.id)] == ["queued", "submitted", "issued", "retrieved"]
    assert flow.job(invoice.id).state == "retrieved"


def test_the_stamped_xml_is_read_from_the_one_file_zip_that_mysuite_links_deliver(
    flow: Flow, addendas: ScriptedAddendas
) -> None:
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("A17_xml.xml", CFDI)
    flow.provider.files["xml"] = bundle.getvalue()
    invoice = enqueue_with_addenda(flow, "AD-ZIP")
    flow.deliver()
    assert run_addenda(flow) == {child_of(flow, invoice).id: "attached"}
    assert addendas.calls[0][2] == CFDI


def test_a_zip_with_more_than_one_xml_fails_the_addenda_without_a_call(flow: Flow, addendas: ScriptedAddendas) -> None:
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("a.xml", CFDI)
        archive.writestr("../b.xml", CFDI)
    flow.provider.files["xml"] = bundle.getvalue()
    invoice = enqueue_with_addenda(flow, "AD-2ZIP")
    flow.deliver()
    run_addenda(flow)
    failed = child_of(flow, invoice)
    assert failed.state == "failed" and "2 XML files" in (failed.error_message or "")
    assert addendas.calls == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermanentError("Prodigia refused procesarAdjuntarAddenda", code="6", description="bad line 2"), "bad line 2"),
        (PermanentError("Prodigia refused procesarAdjuntarAddenda", code="3"), "refused"),
    ],
)
def test_a_permanent_refusal_fails_the_addenda_and_leaves_the_invoice_retrieved(
    flow: Flow, addendas: ScriptedAddendas, error: PermanentError, expected: str
) -> None:
    addendas.answers.append(error)
    invoice = enqueue_with_addenda(flow, "AD-BAD")
    flow.deliver()
    addenda = child_of(flow, invoice)
    assert run_addenda(flow) == {addenda.id: "failed"}
    failed = child_of(flow, invoice)
    assert failed.state == "failed" and expected in (failed.error_message or "")
    assert failed.error_code == error.code and failed.next_attempt_at is None
    assert events(flow, addenda.id)[-1] == ("addenda.failed", "waiting", "failed")
    assert flow.store.jobs.artifacts(addenda.id) == []
    assert flow.job(invoice.id).state == "retrieved" and flow.job(invoice.id).error_message is None
    # A refusal after the login confirms the credentials.
    assert flow.store.pauses.breakers(fresh=True)["prodigia"].reason == LOGINS_CONFIRMED


@pytest.mark.parametrize("mode", ["total", "tfd", "two_addendas", "misplaced"])
def test_an_addenda_that_alters_the_signed_part_is_refused_and_nothing_is_archived(
    flow: Flow, addendas: ScriptedAddendas, mode: str
) -> None:
    addendas.answers.append(sandbox_attach(CFDI.decode(), generate(DATOS), mode))
    invoice = enqueue_with_addenda(flow, "AD-TAMPER")
    flow.deliver()
    addenda = child_of(flow, invoice)
    assert run_addenda(flow) == {addenda.id: "failed"}
    failed = child_of(flow, invoice)
    assert failed.error_class == "permanent" and failed.error_message
    assert flow.store.jobs.artifacts(addenda.id) == []
    assert flow.job(invoice.id).state == "retrieved"


def test_maintenance_is_retried_with_backoff_and_then_attached(flow: Flow, addendas: ScriptedAddendas) -> None:
    addendas.answers.append(TransientError("Prodigia is off-line for maintenance", code="5"))
    invoice = enqueue_with_addenda(flow, "AD-MAINT")
    flow.deliver()
    addenda = child_of(flow, invoice)
    assert run_addenda(flow) == {addenda.id: "transient"}
    waiting = child_of(flow, invoice)
    assert waiting.state == "waiting" and waiting.attempts == 1 and waiting.error_code == "5"
    retry = [m for m in flow.outbox if m.task == "einvoice.addenda"]
    assert len(retry) == 1 and retry[0].countdown > 0
    flow.deliver()
    assert child_of(flow, invoice).state == "attached"
    assert [k for k, _, _ in events(flow, addenda.id)] == ["transition", "error", "addenda.attached"]
    assert len(addendas.calls) == 2


def test_refused_credentials_pause_prodigia_until_resumed(flow: Flow, addendas: ScriptedAddendas) -> None:
    addendas.answers.append(AuthError("Prodigia refused the credentials", code="1"))
    first = enqueue_with_addenda(flow, "AD-AUTH1")
    second = enqueue_with_addenda(flow, "AD-AUTH2")
    flow.deliver()
    assert run_addenda(flow) == {child_of(flow, first).id: "auth", child_of(flow, second).id: "paused"}
    pause = flow.store.pauses.provider_pause("prodigia")
    assert pause is not None and pause.kind == AUTH_PAUSE
    for _ in range(3):
        flow.clock.advance(120)
        run_addenda(flow)
    assert len(addendas.calls) == 1, "a paused provider was called again"
    assert {child_of(flow, j).state for j in (first, second)} == {"waiting"}
    assert flow.store.pauses.resume_provider("prodigia") is not None
    flow.clock.advance(5)
    run_addenda(flow)  # unconfirmed again after the resume: one call first
    flow.clock.advance(5)
    run_addenda(flow)
    assert {child_of(flow, j).state for j in (first, second)} == {"attached"}
    assert flow.job(first.id).state == flow.job(second.id).state == "retrieved"


def test_no_addenda_is_created_for_an_invalid_invoice_nor_twice_for_a_repeat(flow: Flow) -> None:
    child = ChildJob("addenda", "waiting", "prodigia", DATOS.encode(), {"addenda_type": "soriana"})
    common = {
        "provider": flow.provider.name,
        "entity": flow.provider.entity,
        "payload": b"<doc/>",
        "actor": "test",
        "deadline": timedelta(hours=1),
        "dispatch_grace": timedelta(seconds=30),
        "child": child,
    }
    invalid, _ = flow.store.jobs.create_job(internal_id="AD-INV", invalid_reason="not XML", **common)  # type: ignore[arg-type]
    assert flow.store.jobs.addendas([invalid.id]) == {}
    job, created = flow.store.jobs.create_job(internal_id="AD-TWICE", **common)  # type: ignore[arg-type]
    again, created_again = flow.store.jobs.create_job(internal_id="AD-TWICE", **common)  # type: ignore[arg-type]
    assert created and not created_again and again.id == job.id
    assert len(flow.store.jobs.children(job.id)) == 1
    # The corrected document that replaces an invalid one brings its addenda with it.
    corrected = flow.store.jobs.replace_invalid(
        invalid.id,
        payload=b"<doc/>",
        actor="test",
        deadline=timedelta(hours=1),
        dispatch_grace=timedelta(seconds=30),
        child=child,
    )
    assert corrected is not None and corrected.state == "queued"
    (waiting,) = flow.store.jobs.children(invalid.id)
    assert waiting.state == "waiting" and waiting.next_attempt_at is None
    # The internal id still names the invoice, not its addenda.
    assert flow.store.jobs.resolve("AD-TWICE").id == job.id


# ------------------------------------------------------------------------------- the login guard


def other_process(flow: Flow, url: str) -> Services:
    """A second worker process on the same database: its own store, breaker cache and messages."""
    store = Store(make_engine(url), clock=flow.clock)
    return replace(flow.services, store=store, dispatch=lambda *args, **kwargs: None)


def test_login_guard_lets_one_call_out_while_credentials_are_unconfirmed(flow: Flow) -> None:
    pauses = flow.store.pauses
    lease = timedelta(seconds=60)
    assert pauses.claim_login("prodigia", lease) == "won"
    assert pauses.claim_login("prodigia", lease) == "held"
    flow.clock.advance(61)  # the winner died: its lease runs out and another may try
    assert pauses.claim_login("prodigia", lease) == "won"
    with flow.store.db.connection() as conn:
        pauses.apply(conn, Health("prodigia", "failed", "maintenance", guarded=True), _POLICY)
    assert pauses.claim_login("prodigia", lease) == "won", "a failure without a verdict keeps the lease"
    with flow.store.db.connection() as conn:
        pauses.apply(conn, Health("prodigia", "answered", guarded=True), _POLICY)
    assert pauses.claim_login("prodigia", lease) == "confirmed"
    assert pauses.breakers(fresh=True)["prodigia"].logins_confirmed
    pauses.pause_for_auth("prodigia", "credentials refused")
    assert pauses.claim_login("prodigia", lease) == "held"
    pauses.resume_provider("prodigia")
    assert pauses.claim_login("prodigia", lease) == "won", "a resume must confirm the credentials again"


def test_while_one_worker_tries_unconfirmed_credentials_another_makes_no_call(
    flow: Flow, addendas: ScriptedAddendas, tmp_path: Path
) -> None:
    """Worker B's breaker cache says nothing is wrong; only the uncached guard keeps it from calling."""
    first = enqueue_with_addenda(flow, "AD-G1")
    second = enqueue_with_addenda(flow, "AD-G2")
    flow.deliver()
    a, b = child_of(flow, first), child_of(flow, second)
    worker_b = other_process(flow, str(flow.store.engine.url))
    assert worker_b.store.pauses.breakers() == {}  # B's cache: no breaker row, nothing paused
    seen: dict[str, str] = {}
    addendas.answers.append(AuthError("Prodigia refused the credentials", code="1"))
    addendas.during_call = lambda: seen.update(run_step(worker_b, STEPS["einvoice.addenda"], [b.id]))
    assert flow.run("einvoice.addenda", [a.id]) == {a.id: "auth"}
    assert seen == {b.id: "held"}
    assert len(addendas.calls) == 1
    # B is not even dispatched while the pause lasts, and its held run left no event.
    assert [k for k, _, _ in events(flow, b.id)] == ["transition"]
    flow.clock.advance(300)
    assert run_addenda(flow) == {}
    worker_b.store.engine.dispose()


def test_once_confirmed_calls_go_out_in_parallel(flow: Flow, addendas: ScriptedAddendas) -> None:
    first = enqueue_with_addenda(flow, "AD-P1")
    second = enqueue_with_addenda(flow, "AD-P2")
    third = enqueue_with_addenda(flow, "AD-P3")
    flow.deliver()
    a, b, c = (child_of(flow, j) for j in (first, second, third))
    assert flow.run("einvoice.addenda", [a.id]) == {a.id: "attached"}
    worker_b = other_process(flow, str(flow.store.engine.url))
    addendas.during_call = lambda: seen.update(run_step(worker_b, STEPS["einvoice.addenda"], [c.id]))
    seen: dict[str, str] = {}
    assert flow.run("einvoice.addenda", [b.id]) == {b.id: "attached"}
    assert seen == {c.id: "attached"}
    worker_b.store.engine.dispose()


def test_a_step_without_the_guard_is_not_held(flow: Flow, addendas: ScriptedAddendas) -> None:
    """The guard is the declaration's: the same step declared without it lets both calls out."""
    first = enqueue_with_addenda(flow, "AD-U1")
    second = enqueue_with_addenda(flow, "AD-U2")
    flow.deliver()
    a, b = child_of(flow, first), child_of(flow, second)
    unguarded = replace(STEPS["einvoice.addenda"], guards_logins=False)
    worker_b = other_process(flow, str(flow.store.engine.url))
    seen: dict[str, str] = {}
    addendas.during_call = lambda: seen.update(run_step(worker_b, unguarded, [b.id]))
    assert run_step(flow.services, unguarded, [a.id]) == {a.id: "attached"}
    assert seen == {b.id: "attached"}
    worker_b.store.engine.dispose()


# ------------------------------------------------------------------------------------- intake


def test_the_producer_refuses_an_unknown_type_with_the_list_and_keeps_the_type_it_knows() -> None:
    from worker.producer import InvalidInput, addenda_request

    with pytest.raises(InvalidInput, match="known types: casaley, mabe, soriana"):
        addenda_request("Oxxo", DATOS.encode())
    with pytest.raises(InvalidInput):
        addenda_request("soriana", b"Soriana\nCampo|\x07bell\n")
    child = addenda_request("Soriana Extemporánea", DATOS.encode())
    assert (child.kind, child.state, child.provider) == ("addenda", "waiting", "prodigia")
    assert child.doc_extra == {"addenda_type": "soriana-extemporanea"} and child.payload == DATOS.encode()
