"""Invoices with a retailer's addenda through the real pipeline: MYSuite stamps, Prodigia attaches.

Real Celery workers, PostgreSQL, Redis and both simulators over HTTP. The second test is the one
that protects the customer's Prodigia account: with wrong credentials and four busy workers the
service sees exactly one login, and the user is never locked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from models import Job
from tests.e2e.stack import Stack
from tests.harness import FINAL, sandbox_admin, wait_until
from worker.producer import enqueue
from worker.samples import native_xml

pytestmark = pytest.mark.e2e

GOOD = "Soriana\nProveedor|12345\nRemision|R-{n}\nFolioPedido|P-{n}\nCantidad|3\n"
UNPROCESSABLE = "Soriana\nthis line is not Campo|valor\n"


def prodigia(stack: Stack, **knobs: Any) -> Any:
    admin = sandbox_admin(stack.sandbox_url, "prodigia")
    admin("reset")
    admin("config", {"preset": "default", **knobs})
    stack.env["PRODIGIA_ADDENDAS_URL"] = f"{stack.sandbox_url}/prodigia/PadeServ/IntegracionAddendas"
    return admin


def submit(stack: Stack, internal_id: str, size: int, datos: str, folio: int) -> Job:
    """Through the producer API; the sweep dispatches the job (nothing is published from here)."""
    payload = native_xml(internal_id, size, folio=folio)
    outcome = enqueue(stack.store, payload, internal_id, addenda=("soriana", datos.encode()), publish=False)
    assert outcome.created
    return outcome.job


def addendas(stack: Stack) -> dict[str, Job]:
    invoices = stack.store.jobs.list_jobs()
    children = stack.store.jobs.addendas([job.id for job in invoices])
    return {job.internal_id: children[job.id] for job in invoices if job.id in children}


def settled(stack: Stack, count: int) -> bool:
    found = addendas(stack)
    return len(found) == count and all(child.state in ("attached", "failed") for child in found.values())


def test_mysuite_invoices_with_addendas_some_failing(pg_stack: Stack, tmp_path: Path) -> None:
    admin = prodigia(pg_stack)
    # Sync-sized invoices come back with the XML inline; async ones through links to one-file ZIPs.
    sizes = {f"AD-{n:02d}": (1000 if n % 2 else 7000) for n in range(6)}
    for n, (internal_id, size) in enumerate(sizes.items()):
        submit(pg_stack, internal_id, size, GOOD.format(n=internal_id), folio=n + 1)
    submit(pg_stack, "AD-BAD1", 1000, UNPROCESSABLE, folio=50)
    # Through the CLI, as an ERP would: one good, one with data Prodigia cannot process, one unknown type.
    data = tmp_path / "datos.txt"
    for internal_id, datos in (("AD-CLI", GOOD.format(n=9)), ("AD-BAD2", UNPROCESSABLE)):
        data.write_text(datos)
        invoice = tmp_path / f"{internal_id}.xml"
        invoice.write_bytes(native_xml(internal_id, 7000, folio=77 if internal_id == "AD-CLI" else 78))
        done = pg_stack.cli("submit", str(invoice), "--addenda", "Soriana", "--addenda-data", str(data), "--json")
        assert json.loads(done.stdout)["addenda"]["state"] == "waiting"
    (tmp_path / "AD-UNKNOWN.xml").write_bytes(native_xml("AD-UNKNOWN", 1000, folio=79))
    refused = pg_stack.cli(
        "submit", str(tmp_path / "AD-UNKNOWN.xml"), "--addenda", "Oxxo", "--addenda-data", str(data), check=False
    )
    assert refused.returncode != 0 and "unknown addenda type" in refused.stderr and "soriana" in refused.stderr
    assert "AD-UNKNOWN" not in pg_stack.states()

    worker = pg_stack.worker(pool="threads", concurrency=8).start()
    try:
        wait_until(lambda: settled(pg_stack, 9), timeout=120, what="every addenda attached or failed")
        # A service that alters the signed part: its answers are refused, whatever it says.
        admin("config", {"tamper": "tfd"})
        submit(pg_stack, "AD-TAMPER", 1000, GOOD.format(n=99), folio=99)
        wait_until(lambda: settled(pg_stack, 10), timeout=60, what="the tampered addenda refused")
    finally:
        worker.stop()

    assert all(state == "retrieved" for state in pg_stack.states().values()), pg_stack.states()
    found = addendas(pg_stack)
    failed = {key for key, child in found.items() if child.state == "failed"}
    assert failed == {"AD-BAD1", "AD-BAD2", "AD-TAMPER"}
    assert "signed part" in (found["AD-TAMPER"].error_message or "")
    assert "Campo|valor" in (found["AD-BAD1"].error_message or "")
    for internal_id, child in found.items():
        stamped = pg_stack.store.jobs.resolve(internal_id)
        kinds = [event.kind for event in pg_stack.store.jobs.events(child.id)]
        assert kinds == ["transition", f"addenda.{child.state}"], (internal_id, kinds)
        kept = {a.kind: a for a in pg_stack.store.jobs.artifacts(child.id)}
        if child.state == "failed":
            assert kept == {}
            continue
        path = Path(kept["addenda"].path)
        assert path.name == f"{stamped.doc_guid}--{stamped.id}.addenda.xml"
        root = etree.fromstring(path.read_bytes())
        assert etree.QName(root[-1]).localname == "Addenda" and "Remision" in path.read_text()
        assert {a.kind for a in pg_stack.store.jobs.artifacts(stamped.id)} >= {"xml", "pdf"}
    counters = admin("counters")
    assert counters["operations"]["procesarAdjuntarAddenda"]["calls"] == 10  # one call per addenda, none twice
    assert counters["codes"] == {"0": 8, "6": 2}

    status = json.loads(pg_stack.cli("status", "AD-00", "--json").stdout)
    assert status["state"] == "retrieved"
    assert status["addenda"]["type"] == "soriana" and status["addenda"]["state"] == "attached"
    assert status["addenda"]["message"].endswith(".addenda.xml")
    bad = json.loads(pg_stack.cli("status", "AD-BAD2", "--json").stdout)
    assert bad["state"] == "retrieved" and bad["error"] is None
    assert bad["addenda"]["state"] == "failed" and "Campo|valor" in bad["addenda"]["message"]
    history = json.loads(pg_stack.cli("events", status["addenda"]["id"], "--json").stdout)
    assert [e["kind"] for e in history] == ["transition", "addenda.attached"]


def test_wrong_credentials_and_four_busy_workers_make_one_login_and_never_lock_the_user(
    pg_stack: Stack, tmp_path: Path
) -> None:
    # A slow service widens the window in which busy workers could each send a login.
    admin = prodigia(pg_stack, latency_ms=300)
    count = 32
    for n in range(count):
        submit(pg_stack, f"LK-{n:02d}", 1000, GOOD.format(n=n), folio=n + 1)
    # Every addenda becomes due at the same moment: the invoices are stamped while Prodigia is
    # paused, then the operator resumes it with the workers busy and the password still wrong.
    pg_stack.store.pauses.pause_for_auth("prodigia", "held back by the test")
    workers = [pg_stack.worker(name=f"lk{n}", pool="threads", concurrency=4) for n in range(4)]
    for worker in workers:
        worker.env = {**pg_stack.env, "PRODIGIA_PASSWD": "not-the-password"}
        worker.start()
    try:
        wait_until(
            lambda: all(s in FINAL for s in pg_stack.states().values()) and len(pg_stack.states()) == count,
            timeout=120,
            what="every invoice stamped",
        )
        assert admin("counters")["totals"]["calls"] == 0
        pg_stack.cli("resume", "prodigia")
        wait_until(
            lambda: pg_stack.store.pauses.provider_pause("prodigia") is not None,
            timeout=60,
            what="prodigia paused again by the refused login",
        )
        wait_until(lambda: not _busy(pg_stack), timeout=30, what="no addenda step in flight")
    finally:
        for worker in workers:
            worker.stop()
    counters = admin("counters")
    assert counters["totals"]["calls"] == 1, counters
    assert counters["codes"] == {"1": 1}
    assert counters["locked"] == [] and counters["logins"]["sandbox"]["refusals"] == 1
    assert all(child.state == "waiting" for child in addendas(pg_stack).values())

    # With the password fixed and the provider resumed, every addenda is attached; still no lock.
    fixed = pg_stack.worker(name="lk-fixed", pool="threads", concurrency=8).start()
    try:
        pg_stack.cli("resume", "prodigia")
        wait_until(lambda: settled(pg_stack, count), timeout=120, what="every addenda attached")
    finally:
        fixed.stop()
    assert {child.state for child in addendas(pg_stack).values()} == {"attached"}
    counters = admin("counters")
    assert counters["locked"] == [] and counters["logins"]["sandbox"]["refusals"] == 1
    assert counters["codes"] == {"0": count, "1": 1}


def _busy(stack: Stack) -> bool:
    """Some addenda is leased to a worker right now (its step has not recorded yet)."""
    now = stack.store.db.clock()
    return any(child.lease_until is not None and child.lease_until > now for child in addendas(stack).values())
