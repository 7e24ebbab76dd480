"""`einvoice submit` under a key seen before: a repeat is harmless, another document is never dropped
silently, and an invalid document can be corrected; an invalid document never exits 0."""

from __future__ import annotations

import hashlib
import json

from models.states import is_valid_path
from tests.cli.conftest import NOT_XML, Cli, invoice
from tests.harness import transition_path

EXIT_REFUSED = 2
EXIT_INVALID = 3


def test_the_same_document_again_is_already_known(cli: Cli) -> None:
    path = cli.file("INV-1.xml", invoice("INV-1"))
    assert cli("submit", str(path)).returncode == 0
    again = cli("submit", str(path))
    assert again.returncode == 0 and "already known" in again.stdout
    job = cli.job("INV-1")
    assert len(cli.store.jobs.events(job.id)) == 1


def test_another_document_under_a_used_internal_id_is_refused(cli: Cli) -> None:
    first = invoice("INV-2", folio=1)
    assert cli("submit", str(cli.file("first.xml", first)), "--internal-id", "INV-2").returncode == 0
    job = cli.job("INV-2")

    second = cli("submit", str(cli.file("second.xml", invoice("INV-2", folio=2))), "--internal-id", "INV-2")
    assert second.returncode == EXIT_REFUSED
    assert "refused" in second.stdout and "another document" in second.stdout and job.id in second.stdout
    as_json = cli("submit", str(cli.folder / "second.xml"), "--internal-id", "INV-2", "--json")
    assert as_json.returncode == EXIT_REFUSED
    assert json.loads(as_json.stdout)["job_id"] == job.id

    assert cli.store.jobs.payload(job.id) == first
    assert cli.store.jobs.document_sha256(job.id) == hashlib.sha256(first).hexdigest()
    assert len(cli.store.jobs.events(job.id)) == 1


def test_an_invalid_document_exits_non_zero_and_its_correction_replaces_it(cli: Cli) -> None:
    bad = cli("submit", str(cli.file("bad.xml", NOT_XML)), "--internal-id", "INV-3")
    assert bad.returncode == EXIT_INVALID, bad.stdout
    assert "invalid" in bad.stdout and "well-formed" in bad.stdout
    job = cli.job("INV-3")

    same = cli("submit", str(cli.folder / "bad.xml"), "--internal-id", "INV-3")
    assert same.returncode == EXIT_INVALID and "already known" in same.stdout
    assert len(cli.store.jobs.events(job.id)) == 1

    other_bad = cli("submit", str(cli.file("bad2.xml", b"")), "--internal-id", "INV-3")
    assert other_bad.returncode == EXIT_INVALID and "empty" in other_bad.stdout
    still = cli.store.jobs.get(job.id)
    assert still.state == "invalid" and still.error_message and "empty" in still.error_message
    reason_event = cli.store.jobs.events(job.id)[-1]
    assert (reason_event.kind, reason_event.from_state, reason_event.to_state) == ("error", "invalid", "invalid")

    good = invoice("INV-3")
    fixed = cli("submit", str(cli.file("good.xml", good)), "--internal-id", "INV-3", "--json")
    assert fixed.returncode == 0, fixed.stdout
    answer = json.loads(fixed.stdout)
    assert answer["id"] == job.id and answer["state"] == "queued" and answer["replaced"] and answer["error"] is None
    assert cli.store.jobs.payload(job.id) == good
    replacement = cli.store.jobs.events(job.id)[-1]
    assert (replacement.kind, replacement.from_state, replacement.to_state) == ("transition", "invalid", "queued")
    assert replacement.actor == "producer" and hashlib.sha256(good).hexdigest() in (replacement.message or "")
    assert is_valid_path(transition_path(cli.store, job.id))

    # Now queued, the job is like any other: its document again is a repeat, another one is refused.
    assert cli("submit", str(cli.folder / "good.xml"), "--internal-id", "INV-3").returncode == 0
    late = cli("submit", str(cli.folder / "bad.xml"), "--internal-id", "INV-3")
    assert late.returncode == EXIT_REFUSED and "another document" in late.stdout
    assert cli.store.jobs.get(job.id).state == "queued"


def test_a_folder_is_processed_whole_and_its_status_says_the_worst(cli: Cli) -> None:
    folder = cli.folder / "batch"
    folder.mkdir()
    (folder / "A-BAD.xml").write_bytes(NOT_XML)
    (folder / "B-GOOD.xml").write_bytes(invoice("B-GOOD"))
    invalid = cli("submit", str(folder))
    assert invalid.returncode == EXIT_INVALID
    assert "2 files: 1 accepted, 0 already known, 1 invalid, 0 refused" in invalid.stderr
    assert {job.internal_id: job.state for job in cli.store.jobs.list_jobs()} == {
        "A-BAD": "invalid",
        "B-GOOD": "queued",
    }

    (folder / "B-GOOD.xml").write_bytes(invoice("B-GOOD", folio=2))
    (folder / "C-NEW.xml").write_bytes(invoice("C-NEW"))
    refused = cli("submit", str(folder), "--json")
    assert refused.returncode == EXIT_REFUSED
    assert "3 files: 1 accepted, 0 already known, 1 invalid, 1 refused" in refused.stderr
    answers = {item["internal_id"]: item for item in json.loads(refused.stdout)}
    assert "another document" in answers["B-GOOD"]["refused"]
    assert answers["C-NEW"]["state"] == "queued" and answers["A-BAD"]["state"] == "invalid"
