"""The producer API under a key it has seen: typed refusals for what is not a document or is another
document, and one winner when two corrections of an invalid job race."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from models import Store
from models.states import is_valid_path
from tests.harness import transition_path
from worker.producer import ConflictingDocument, Enqueued, InvalidInput, enqueue
from worker.samples import native_xml


@pytest.mark.parametrize("payload", [None, "<fx:FactDocMX/>", 42, ["<x/>"]])
def test_a_payload_that_is_not_bytes_is_invalid_input(store: Store, payload: Any) -> None:
    with pytest.raises(InvalidInput, match="must be bytes"):
        enqueue(store, payload, "NOT-BYTES", publish=False)
    assert store.jobs.list_jobs() == []


def test_a_bytearray_is_a_document(store: Store) -> None:
    document = native_xml("BYTEARRAY", 2000)
    job = enqueue(store, bytearray(document), "BYTEARRAY", publish=False).job
    assert job.state == "queued" and store.jobs.payload(job.id) == document


def test_another_document_is_a_typed_refusal_naming_the_job(store: Store) -> None:
    first = enqueue(store, native_xml("TYPED", 2000, folio=1), "TYPED", publish=False)
    with pytest.raises(ConflictingDocument) as refused:
        enqueue(store, native_xml("TYPED", 2000, folio=2), "TYPED", publish=False)
    assert isinstance(refused.value, InvalidInput)
    assert refused.value.job.id == first.job.id
    with pytest.raises(ConflictingDocument):
        enqueue(store, b"not xml", "TYPED", publish=False)  # an invalid one is no excuse either
    assert store.jobs.get(first.job.id).state == "queued"


def test_two_corrections_racing_leave_one_winner(store: Store) -> None:
    invalid = enqueue(store, b"not xml", "RACE", publish=False).job
    documents = [native_xml("RACE", 2000, folio=n) for n in range(4)]
    outcomes: list[Enqueued | ConflictingDocument] = []
    barrier = threading.Barrier(len(documents))

    def correct(document: bytes) -> None:
        barrier.wait()
        try:
            outcomes.append(enqueue(store, document, "RACE", publish=False))
        except ConflictingDocument as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=correct, args=(document,)) for document in documents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [outcome for outcome in outcomes if isinstance(outcome, Enqueued)]
    assert len(winners) == 1 and winners[0].replaced and winners[0].job.id == invalid.id
    assert len(outcomes) == len(documents)
    assert store.jobs.payload(invalid.id) in documents
    assert transition_path(store, invalid.id) == [(None, "invalid"), ("invalid", "queued")]
    assert is_valid_path(transition_path(store, invalid.id))
