"""Wake-ups of the gathering submit (`tasks.doorbell`): one message per batch of documents, and no
document left without a claim that will see it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from providers.base import AuthError
from tests.workflow.conftest import Flow
from tests.workflow.memory import MemoryDoorbell


@pytest.fixture
def rung(flow: Flow) -> Flow:
    bell = MemoryDoorbell(flow.clock, flow.services.policy.redispatch_seconds)
    flow.services = replace(flow.services, doorbell=bell)
    return flow


def submits(flow: Flow) -> int:
    return sum(m.task == "einvoice.submit" for m in flow.sent)


def test_a_backlog_goes_out_one_wake_up_per_batch(rung: Flow) -> None:
    batch = rung.services.policy.submit_batch
    jobs = [rung.enqueue(f"B-{n}") for n in range(2 * batch + 5)]
    assert submits(rung) == 1, "the documents after the first find a wake-up pending"
    results = rung.deliver()
    claimed = [r for r in results if r and all(state == "submitted" for state in r.values())]
    assert [len(r) for r in claimed] == [batch, batch, 5], "each full batch rang for the next"
    assert submits(rung) == 3
    assert {rung.job(job.id).state for job in jobs} == {"retrieved"}
    sent = sorted(call for call in rung.provider.calls if call.startswith("submit:"))
    assert sent == sorted(f"submit:B-{n}" for n in range(len(jobs))), "each document sent once"


def test_a_document_accepted_while_a_wake_up_waits_is_claimed_by_it(rung: Flow) -> None:
    first = rung.enqueue("W-1")
    second = rung.enqueue("W-2")
    [wake] = rung.outbox
    assert wake.job_ids == [first.id] and wake.wake == "memory"
    assert rung.deliver(limit=1) == [{first.id: "submitted", second.id: "submitted"}]
    third = rung.enqueue("W-3")
    assert [m.job_ids for m in rung.outbox if m.task == "einvoice.submit"] == [[third.id]], (
        "the run answered the bell before it claimed: the next document rings anew"
    )


def test_a_wake_up_that_finds_its_document_taken_still_claims_the_waiting_ones(rung: Flow) -> None:
    first = rung.enqueue("T-1")
    rung.outbox.clear()
    assert rung.run("einvoice.submit", [first.id]) == {first.id: "submitted"}, "a sweep's message took it"
    rung.services.doorbell.answer("einvoice.submit", "memory")
    later = rung.enqueue("T-2")
    assert rung.run("einvoice.submit", [first.id], wake="memory") == {later.id: "submitted"}
    assert rung.run("einvoice.submit", [], wake="memory") == {}, "nothing waits: nothing is claimed"
    assert submits(rung) == 2, "a batch that was not full rings for nothing"


def test_a_lost_wake_up_leaves_its_document_due_for_the_sweep(rung: Flow) -> None:
    job = rung.enqueue("L-1")
    rung.outbox.clear()  # the wake-up is lost, its bell still set until it expires
    grace = rung.services.policy.redispatch_seconds
    rung.clock.advance(grace + 1)
    assert rung.sweep() == 1
    assert [m.job_ids for m in rung.outbox] == [[job.id]], "the bell expired with the grace"
    rung.deliver()
    assert rung.job(job.id).state == "retrieved"


def test_a_document_too_large_to_gather_gets_its_own_message(rung: Flow) -> None:
    small = rung.enqueue("SZ-1")
    large = rung.enqueue("SZ-2", b"<doc>" + b"x" * rung.services.policy.gather_max_bytes + b"</doc>")
    assert [(m.job_ids, m.wake) for m in rung.outbox] == [([small.id], "memory"), ([large.id], None)]
    rung.deliver()
    assert {rung.job(small.id).state, rung.job(large.id).state} == {"retrieved"}


def test_the_sweep_rings_once_for_a_backlog_past_the_grace(rung: Flow) -> None:
    batch = rung.services.policy.submit_batch
    jobs = [rung.enqueue(f"SW-{n}") for n in range(batch + 3)]
    large = rung.enqueue("SW-L", b"<doc>" + b"x" * rung.services.policy.gather_max_bytes + b"</doc>")
    rung.outbox.clear()  # every message lost
    rung.clock.advance(rung.services.policy.redispatch_seconds + 1)
    assert rung.sweep() == len(jobs) + 1
    assert sorted((len(m.job_ids), m.wake or "") for m in rung.outbox) == [(1, ""), (1, "memory")], (
        "one wake-up for the small ones, a message of its own for the large one"
    )
    rung.deliver()
    assert {rung.job(job.id).state for job in [*jobs, large]} == {"retrieved"}
    later = rung.enqueue("SW-X")
    rung.outbox.clear()
    rung.clock.advance(rung.services.policy.redispatch_seconds + 1)
    assert rung.services.doorbell.ring("einvoice.submit", "memory"), "another document's wake-up is pending"
    assert rung.sweep() == 1 and rung.outbox == [], "that wake-up will claim it: nothing is sent"
    assert rung.job(later.id).state == "queued"


def test_a_batch_the_breaker_holds_back_stops_the_chain_until_the_sweep(rung: Flow) -> None:
    batch = rung.services.policy.submit_batch
    rung.provider.submits.append(AuthError("bad login"))
    jobs = [rung.enqueue(f"P-{n}") for n in range(2 * batch + 3)]
    rung.deliver()
    assert submits(rung) == 2, "the batch behind the refusal was held back and rang for no other"
    assert rung.provider.calls == ["submit:P-0"]
    assert sum(rung.job(job.id).state == "queued" for job in jobs) == len(jobs)
    rung.store.pauses.resume_provider("memory")
    rung.clock.advance(rung.services.policy.redispatch_seconds + 1)
    rung.sweep()
    rung.deliver()
    assert {rung.job(job.id).state for job in jobs} == {"retrieved"}
