"""Every outcome of the invoice workflow, in-process and in milliseconds: the real runner, steps,
store and archive on SQLite, a scripted provider and a fixed clock."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from models import Health, Job, JobState
from providers.answers import MalformedAnswer
from providers.base import (
    AccountPaused,
    AuthError,
    DocumentIds,
    PermanentError,
    RateLimitedError,
    SubmitResult,
    TransientError,
    VerifyResult,
    VerifyStatus,
)
from tasks.outcomes import Stayed
from tasks.runner import run_step
from tasks.workflow import StepSpec
from tests.workflow.conftest import STEPS, Flow
from tests.workflow.memory import PDF, PENDING, XML


def test_async_invoice_goes_from_queued_to_retrieved_with_both_files_archived(flow: Flow) -> None:
    job = flow.enqueue("INV-1")
    assert flow.deliver()[0] == {job.id: "submitted"}
    assert flow.job(job.id).state == "retrieved"
    assert flow.kinds(job.id) == [
        ("transition", None, "queued"),
        ("transition", "queued", "submitted"),
        ("transition", "submitted", "issued"),
        ("transition", "issued", "retrieved"),
    ]
    done = flow.job(job.id)
    assert done.doc_fiscal_id == done.doc_guid and done.polls == 1 and done.xml_url
    artifacts = {a.kind: a for a in flow.store.jobs.artifacts(job.id)}
    assert set(artifacts) == {"xml", "pdf"}
    for kind, content in (("xml", XML), ("pdf", PDF)):
        assert Path(artifacts[kind].path).read_bytes() == content
        assert artifacts[kind].sha256 == hashlib.sha256(content).hexdigest()
    assert flow.provider.calls == ["submit:INV-1", "verify:REQ-INV-1", "retrieve:REQ-INV-1", "download", "download"]
    # The links are refreshed a day before they expire; nothing else is scheduled.
    assert done.next_attempt_at is not None and done.links_expires_at is not None
    assert done.links_expires_at - done.next_attempt_at == timedelta(days=1)


def test_synchronous_answer_records_the_whole_chain_at_once(flow: Flow) -> None:
    doc = DocumentIds(guid="6b66459a-65a3-4c34-b23c-0b417134d246", year=2026)
    flow.provider.submits.append(SubmitResult("R1", issued=doc, files={"xml": XML, "pdf": PDF}))
    job = flow.enqueue("SYNC-1")
    assert flow.deliver() == [{job.id: "retrieved"}]
    assert [to for _, _, to in flow.kinds(job.id)] == ["queued", "submitted", "issued", "retrieved"]
    assert flow.job(job.id).next_attempt_at is None
    assert flow.provider.calls == ["submit:SYNC-1"]


def test_pending_polls_are_events_and_back_off(flow: Flow) -> None:
    flow.provider.verifies.extend([PENDING, PENDING])
    job = flow.enqueue("SLOW")
    results = flow.deliver()
    assert [r[job.id] for r in results] == ["submitted", "poll", "poll", "retrieved"]
    polls = [e for e in flow.store.jobs.events(job.id) if e.kind == "poll"]
    assert [(e.from_state, e.to_state) for e in polls] == [("submitted", "submitted")] * 2
    assert flow.job(job.id).polls == 3
    polls_sent = [m.countdown for m in flow.sent if m.task == "einvoice.verify"]
    assert len(polls_sent) == 3
    assert min(polls_sent) >= flow.services.policy.poll_min_seconds


def test_rejection_fails_the_job_with_the_providers_reason(flow: Flow) -> None:
    flow.provider.verifies.append(VerifyResult(VerifyStatus.FAILED, error_message="CFDI40999 bad", error_code="3"))
    job = flow.enqueue("BAD")
    flow.deliver()
    failed = flow.job(job.id)
    assert (failed.state, failed.error_class, failed.error_code, failed.error_message) == (
        "failed",
        "rejected",
        "3",
        "CFDI40999 bad",
    )
    assert failed.next_attempt_at is None and flow.outbox == []


def test_permanent_submit_error_fails_without_retry(flow: Flow) -> None:
    flow.provider.submits.append(PermanentError("document refused", code="301"))
    job = flow.enqueue("PERM")
    flow.deliver()
    assert flow.job(job.id).state == "failed"
    assert flow.kinds(job.id)[-1] == ("transition", "queued", "failed")
    assert flow.provider.calls == ["submit:PERM"]


def test_transient_submit_error_waits_for_the_resend_guard_and_counts_a_failure(flow: Flow) -> None:
    flow.provider.submits.append(TransientError("read timeout"))
    job = flow.enqueue("FLAKY")
    assert flow.deliver(limit=1) == [{job.id: "transient"}]
    waiting = flow.job(job.id)
    assert waiting.state == "queued" and waiting.attempts == 1
    assert waiting.next_attempt_at is not None
    assert (waiting.next_attempt_at - flow.clock.now).total_seconds() >= 30.0
    error = flow.store.jobs.events(job.id)[-1]
    assert (error.kind, error.error_class, error.attempt) == ("error", "transient", 1)
    assert flow.store.pauses.breakers(fresh=True)["memory"].failures == 1
    flow.deliver()
    assert flow.job(job.id).state == "retrieved"
    assert flow.store.pauses.breakers(fresh=True)["memory"].failures == 0, "an answer resets the count"


def test_rate_limited_call_waits_without_counting_against_the_provider(flow: Flow) -> None:
    flow.provider.submits.append(RateLimitedError("429", retry_after=12.0))
    job = flow.enqueue("BUSY")
    flow.deliver(limit=1)
    due = flow.job(job.id).next_attempt_at
    assert due is not None and (due - flow.clock.now).total_seconds() >= 12.0
    assert "memory" not in flow.store.pauses.breakers(fresh=True)


def test_refused_credentials_pause_the_provider_for_every_job_until_resumed(flow: Flow) -> None:
    flow.one_at_a_time()
    flow.provider.submits.append(AuthError("bad login"))
    first, second = flow.enqueue("A-1"), flow.enqueue("A-2")
    flow.deliver()
    assert flow.provider.calls == ["submit:A-1"], "nothing is sent after a refusal"
    pause = flow.store.pauses.provider_pause("memory")
    assert pause is not None and pause.kind == "auth"
    assert [e.error_class for e in flow.store.jobs.events(second.id) if e.kind == "error"] == ["paused"]
    flow.clock.advance(600)
    assert flow.sweep() == 0, "the sweep leaves a paused provider alone"
    flow.store.pauses.resume_provider("memory")
    assert flow.sweep() == 2
    flow.deliver()
    assert {flow.job(first.id).state, flow.job(second.id).state} == {"retrieved"}


def test_consecutive_failures_open_the_breaker_and_one_probe_closes_it(flow: Flow) -> None:
    flow.one_at_a_time()
    flow.provider.submits.extend([TransientError("down")] * 4)
    jobs = [flow.enqueue(f"OUT-{n}") for n in range(4)]
    flow.outbox.clear()
    flow.run("einvoice.submit", [jobs[0].id])
    flow.run("einvoice.submit", [jobs[1].id])
    flow.run("einvoice.submit", [jobs[2].id])
    pause = flow.store.pauses.provider_pause("memory")
    assert pause is not None and pause.kind == "outage"
    assert flow.run("einvoice.submit", [jobs[3].id]) == {jobs[3].id: "paused"}
    assert flow.provider.calls.count("submit:OUT-3") == 0
    flow.outbox.clear()
    flow.clock.advance(60)
    assert flow.sweep() == 4, "the wait is over: the jobs go out to race for the probe"
    results = flow.deliver(limit=4)[:4]
    probes = [r for r in results if "transient" in r.values()]
    assert len(probes) == 1, "exactly one call went through"
    pause = flow.store.pauses.provider_pause("memory")
    assert pause is not None and pause.probes == 1
    flow.clock.advance(60)
    flow.outbox.clear()
    flow.sweep()
    flow.deliver()
    assert flow.store.pauses.provider_pause("memory") is None, "the probe's answer closed the breaker"
    assert all(flow.job(j.id).state == "retrieved" for j in jobs)


def test_garbled_answers_are_retried_without_opening_the_breaker(flow: Flow) -> None:
    flow.one_at_a_time()
    flow.provider.submits.extend([MalformedAnswer("DocumentGUID is not a UUID: 'x'")] * 8)
    jobs = [flow.enqueue(f"GARBLED-{n}") for n in range(8)]
    flow.outbox.clear()
    for job in jobs:
        assert flow.run("einvoice.submit", [job.id]) == {job.id: "transient"}
    assert flow.store.pauses.provider_pause("memory") is None, "a garbled answer is still an answer"


def test_a_submit_gathers_the_waiting_small_documents_and_their_polls_go_out_as_one(flow: Flow) -> None:
    jobs = [flow.enqueue(f"G-{n}") for n in range(4)]
    first = flow.deliver(limit=1)[0]
    assert first == {job.id: "submitted" for job in jobs}
    assert flow.provider.calls == [f"submit:G-{n}" for n in range(4)]
    assert flow.deliver(limit=3) == [{}, {}, {}], "the other messages find their jobs taken"
    [poll] = flow.outbox
    assert (poll.task, sorted(poll.job_ids)) == ("einvoice.verify", sorted(job.id for job in jobs))
    flow.deliver()
    assert {flow.job(job.id).state for job in jobs} == {"retrieved"}
    assert flow.provider.calls.count("submit:G-0") == 1


def test_gathering_leaves_large_documents_retries_not_due_and_the_batch_limit(flow: Flow) -> None:
    limit = flow.services.policy.submit_batch - 1
    large = flow.enqueue("LARGE", b"<doc>" + b"x" * flow.services.policy.gather_max_bytes + b"</doc>")
    flow.provider.submits.append(TransientError("read timeout"))
    retrying = flow.enqueue("RETRY")
    flow.outbox.clear()
    assert flow.run("einvoice.submit", [retrying.id]) == {retrying.id: "transient"}
    small = [flow.enqueue(f"S-{n}") for n in range(limit + 2)]
    flow.outbox.clear()
    done = flow.run("einvoice.submit", [small[0].id])
    assert len(done) == limit + 1 and small[0].id in done
    assert large.id not in done and retrying.id not in done
    assert flow.job(large.id).state == "queued" and flow.job(retrying.id).state == "queued"
    assert sum(flow.job(job.id).state == "queued" for job in small) == 1


def test_a_refused_login_in_a_gathered_batch_stops_the_calls_after_it(flow: Flow) -> None:
    flow.provider.submits.append(AuthError("bad login"))
    first, second, third = flow.enqueue("A-1"), flow.enqueue("A-2"), flow.enqueue("A-3")
    assert flow.deliver(limit=1) == [{first.id: "auth", second.id: "auth", third.id: "auth"}]
    assert flow.provider.calls == ["submit:A-1"], "nothing is sent after a refusal"
    assert [e.error_class for e in flow.store.jobs.events(third.id) if e.kind == "error"] == ["auth"]
    flow.outbox.clear()
    flow.store.pauses.resume_provider("memory")
    assert flow.sweep() == 3
    flow.deliver()
    assert {flow.job(job.id).state for job in (first, second, third)} == {"retrieved"}


def test_a_gathered_batch_whose_first_call_gets_no_answer_sends_nothing_more(flow: Flow) -> None:
    flow.provider.submits.append(TransientError("connection refused"))
    jobs = [flow.enqueue(f"D-{n}") for n in range(4)]
    assert flow.deliver(limit=1) == [{job.id: "transient" for job in jobs}]
    assert flow.provider.calls == ["submit:D-0"], "the provider looks down: one call tells"
    assert flow.store.pauses.breakers(fresh=True)["memory"].failures == 4, "each document kept back counts"
    assert [flow.job(job.id).attempts for job in jobs] == [1, 0, 0, 0], "a call never made is no attempt"
    waits = [(flow.job(job.id).next_attempt_at - flow.clock.now).total_seconds() for job in jobs]  # type: ignore[operator]
    guarded = flow.services.policy.redispatch_seconds + flow.services.policy.resend_after_seconds
    assert waits[0] >= guarded > max(waits[1:]), "only a document that may have arrived waits to be resent"


def test_a_garbled_first_answer_does_not_hold_the_rest_of_the_batch_back(flow: Flow) -> None:
    flow.provider.submits.append(MalformedAnswer("DocumentGUID is not a UUID: 'x'"))
    jobs = [flow.enqueue(f"M-{n}") for n in range(3)]
    [first] = flow.deliver(limit=1)
    assert first == {jobs[0].id: "transient", jobs[1].id: "submitted", jobs[2].id: "submitted"}
    assert flow.provider.calls == [f"submit:M-{n}" for n in range(3)]


def test_polls_one_by_one_stop_at_the_first_that_gets_no_answer(flow: Flow) -> None:
    jobs = [flow.enqueue(f"P-{n}") for n in range(3)]
    flow.deliver(limit=3)  # one gathered submit, two messages that find their jobs taken
    [poll] = flow.outbox
    flow.outbox.clear()
    flow.provider.verifies.append(TransientError("read timeout"))
    flow.clock.advance(poll.countdown)
    assert flow.run(poll.task, poll.job_ids) == {job.id: "transient" for job in jobs}
    assert sum(call.startswith("verify:") for call in flow.provider.calls) == 1
    pause = flow.store.pauses.provider_pause("memory")
    assert pause is not None and pause.kind == "outage", "three documents kept back: the breaker opens"
    flow.store.pauses.resume_provider("memory")
    flow.provider.verifies.extend([VerifyResult(VerifyStatus.PENDING), TransientError("read timeout")])
    flow.clock.advance(60)
    done = flow.run(poll.task, poll.job_ids)
    assert sorted(done.values()) == ["poll", "transient", "transient"]
    assert sum(call.startswith("verify:") for call in flow.provider.calls) == 3, "nothing after the unanswered one"


def test_in_a_poll_batch_a_fetch_without_answer_holds_the_other_fetches_back(flow: Flow) -> None:
    jobs = [flow.enqueue(f"F-{n}") for n in range(3)]
    flow.deliver(limit=3)
    [poll] = flow.outbox
    flow.outbox.clear()
    flow.provider.retrieves.append(TransientError("503 Service Unavailable"))
    flow.store.steps.record([], actor="test", health=[Health("memory", "failed", "an earlier step's call")])
    flow.clock.advance(poll.countdown)
    assert flow.run(poll.task, poll.job_ids) == {job.id: "issued" for job in jobs}
    assert sum(call.startswith("retrieve:") for call in flow.provider.calls) == 1
    breaker = flow.store.pauses.breakers(fresh=True)["memory"]
    assert breaker.failures == 1, "the polls answered, but the fetch after them did not: nothing to reset"
    assert {flow.job(job.id).doc_guid is not None for job in jobs} == {True}, "the fiscal ids are kept"
    flow.clock.advance(60)
    flow.outbox.clear()
    flow.sweep()
    flow.deliver()
    assert {flow.job(job.id).state for job in jobs} == {"retrieved"}


def test_job_past_its_deadline_expires_without_calling_the_provider(flow: Flow) -> None:
    job = flow.enqueue("LATE")
    flow.outbox.clear()
    flow.clock.advance(3601)
    assert flow.run("einvoice.submit", [job.id]) == {job.id: "expired"}
    assert flow.provider.calls == []
    assert flow.job(job.id).error_class == "deadline"


def test_a_retry_that_would_pass_the_deadline_expires_with_the_last_error(flow: Flow) -> None:
    flow.provider.submits.append(TransientError("gateway timeout"))
    job = flow.enqueue("NEAR")
    flow.outbox.clear()
    flow.clock.advance(3590)
    flow.run("einvoice.submit", [job.id])
    expired = flow.job(job.id)
    assert expired.state == "expired" and "gateway timeout" in (expired.error_message or "")


def test_a_second_delivery_finds_nothing_to_do(flow: Flow) -> None:
    job = flow.enqueue("TWICE")
    flow.outbox.clear()
    assert flow.run("einvoice.submit", [job.id]) == {job.id: "submitted"}
    assert flow.run("einvoice.submit", [job.id]) == {}
    assert flow.provider.calls == ["submit:TWICE"]


def test_a_job_leased_by_a_live_worker_is_left_alone_until_the_lease_runs_out(flow: Flow) -> None:
    job = flow.enqueue("LEASED")
    flow.outbox.clear()
    assert flow.store.steps.claim([job.id], JobState.QUEUED, timedelta(seconds=60))  # a worker that dies
    assert flow.run("einvoice.submit", [job.id]) == {}, "a duplicate delivery is someone else's"
    flow.clock.advance(30)
    assert flow.sweep() == 0
    flow.clock.advance(31)
    assert flow.sweep() == 1, "the lease ran out: the sweep dispatches the job again"
    flow.deliver()
    assert flow.job(job.id).state == "retrieved"


def test_a_change_that_lost_the_race_applies_nothing_and_sends_nothing(flow: Flow) -> None:
    job = flow.enqueue("RACE")
    flow.outbox.clear()
    claimed = flow.store.steps.claim([job.id], JobState.QUEUED, timedelta(seconds=60))
    assert claimed
    # Meanwhile an operator (or a twin worker past the lease) moved the job on.
    assert flow.store.steps.transition(job.id, JobState.QUEUED, JobState.FAILED, actor="operator")
    flow.clock.advance(61)
    assert flow.run("einvoice.submit", [job.id]) == {}
    assert flow.outbox == [] and flow.provider.calls == []


def test_an_unexpected_exception_becomes_an_error_event_and_a_schedule(flow: Flow) -> None:
    flow.provider.submits.append(KeyError("surprise"))
    job = flow.enqueue("BUG")
    assert flow.deliver(limit=1) == [{job.id: "unexpected"}]
    error = flow.store.jobs.events(job.id)[-1]
    assert (error.kind, error.error_class) == ("error", "unexpected")
    assert "KeyError" in (error.message or "") and "surprise" in (error.message or "")
    assert flow.job(job.id).next_attempt_at is not None
    assert "memory" not in flow.store.pauses.breakers(fresh=True), "our bug is not the provider's failure"


def test_an_outcome_the_step_may_not_conclude_is_recorded_as_a_bug(flow: Flow) -> None:
    spec = STEPS["einvoice.submit"]
    rogue = StepSpec(
        name=spec.name,
        state=spec.state,
        queue=spec.queue,
        run=lambda ctx, jobs: {c.job.id: Stayed(note=_note(), next_in=1.0) for c in jobs},
        outcomes=spec.outcomes,
        with_payload=True,
    )
    job = flow.enqueue("ROGUE")
    flow.outbox.clear()
    assert run_step(flow.services, rogue, [job.id]) == {job.id: "unexpected"}
    assert "may not conclude Stayed" in (flow.store.jobs.events(job.id)[-1].message or "")


def _note():
    from models import Note

    return Note("poll", "pending")


def test_verify_takes_a_batch_in_one_claim_one_call_and_one_record(flow: Flow) -> None:
    jobs = [flow.enqueue(f"B-{n}") for n in range(3)]
    flow.outbox.clear()
    for job in jobs:
        flow.run("einvoice.submit", [job.id])
    flow.outbox.clear()
    flow.provider.verifies.extend([PENDING, VerifyResult(VerifyStatus.FAILED, error_message="no"), TransientError("x")])
    statements = _count_transactions(flow)
    results = flow.run("einvoice.verify", [j.id for j in jobs])
    assert results == {jobs[0].id: "poll", jobs[1].id: "failed", jobs[2].id: "transient"}
    assert flow.provider.batches == [3]
    assert statements() == 2, "one claim and one record for the whole batch"


def _count_transactions(flow: Flow):
    count = [0]

    def begin(conn) -> None:
        count[0] += 1

    sa.event.listen(flow.store.engine, "begin", begin)
    return lambda: count[0]


def test_the_sweep_hands_out_due_polls_in_provider_sized_batches(flow: Flow) -> None:
    flow.provider.batch_size = 4
    jobs = [flow.enqueue(f"S-{n}") for n in range(10)]
    flow.outbox.clear()
    for job in jobs:
        flow.run("einvoice.submit", [job.id])
    flow.outbox.clear()
    flow.clock.advance(3000)
    assert flow.sweep() == 10
    assert [len(m.job_ids) for m in flow.outbox] == [4, 4, 2]
    assert {m.task for m in flow.outbox} == {"einvoice.verify"}


def test_a_sweep_with_nothing_due_is_one_statement(flow: Flow) -> None:
    flow.enqueue("IDLE")
    flow.outbox.clear()
    statements: list[str] = []
    sa.event.listen(flow.store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert flow.sweep() == 0
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("UPDATE")


def test_retrieve_step_takes_over_when_the_inline_fetch_failed(flow: Flow) -> None:
    flow.provider.retrieves.append(TransientError("links not ready"))
    job = flow.enqueue("LINKS")
    results = flow.deliver()
    assert [r[job.id] for r in results] == ["submitted", "issued", "retrieved"]
    issued = next(e for e in flow.store.jobs.events(job.id) if e.to_state == "issued")
    assert "files not retrieved yet" in (issued.message or "")


def test_links_are_refreshed_on_schedule_as_events(flow: Flow) -> None:
    job = flow.enqueue("REFRESH")
    flow.deliver()
    due = flow.job(job.id).next_attempt_at
    assert due is not None
    flow.clock.now = due
    assert flow.sweep() == 1
    assert flow.deliver() == [{job.id: "links"}]
    assert flow.kinds(job.id)[-1] == ("links", "retrieved", "retrieved")


def test_a_value_the_database_refuses_is_recorded_as_an_error_not_lost(pg_flow: Flow) -> None:
    flow = pg_flow
    flow.provider.submits.append(SubmitResult("R" * 150))  # the column holds 100
    odd, fine = flow.enqueue("ODD"), flow.enqueue("FINE")
    flow.outbox.clear()
    flow.run("einvoice.submit", [odd.id])
    refused = flow.store.jobs.events(odd.id)[-1]
    assert (refused.kind, refused.error_class) == ("error", "unexpected")
    assert "refused" in (refused.message or "")
    assert flow.job(odd.id).state == "queued" and flow.job(odd.id).next_attempt_at is not None
    flow.run("einvoice.submit", [fine.id])
    assert flow.job(fine.id).state != "queued"


def test_status_fields_carry_the_fiscal_id_and_provider_fields(flow: Flow) -> None:
    doc = DocumentIds(fiscal_id="E310000000001", extra={"security_code": "ABC123", "qr_url": "https://q"})
    flow.provider.verifies.append(VerifyResult(VerifyStatus.ISSUED, doc))
    job = flow.enqueue("ECF")
    flow.deliver()
    done: Job = flow.job(job.id)
    assert done.doc_fiscal_id == "E310000000001"
    assert done.doc_extra == {"security_code": "ABC123", "qr_url": "https://q"}


def test_a_spent_quota_pauses_the_whole_account_until_it_renews(flow: Flow) -> None:
    renews = flow.clock.now + timedelta(minutes=30)
    flow.provider.submits.append(AccountPaused("plan spent", resume_at=renews))
    first, second = flow.enqueue("Q-1"), flow.enqueue("Q-2")
    flow.deliver()
    pause = flow.store.pauses.provider_pause("memory")
    assert pause is not None and (pause.kind, pause.until) == ("quota", renews)
    assert flow.job(first.id).next_attempt_at == renews
    assert flow.provider.calls == ["submit:Q-1"], "the second job was held back, not sent"
    flow.clock.advance(600)
    assert flow.sweep() == 0
    flow.clock.now = renews + timedelta(seconds=1)
    assert flow.sweep() == 2
    flow.deliver()
    assert {flow.job(first.id).state, flow.job(second.id).state} == {"retrieved"}


def test_a_status_answer_that_carries_the_final_record_completes_the_document(flow: Flow) -> None:
    flow.provider.retrieve_in_verify = True
    record = b'{"encf": "E310000000001", "status": "Aceptado"}'
    doc = DocumentIds(fiscal_id="E310000000001", extra={"observations": "1921: monto ajustado"})
    flow.provider.verifies.append(VerifyResult(VerifyStatus.ISSUED, doc, files={"json": record}))
    job = flow.enqueue("ECF-2")
    flow.deliver()
    assert flow.job(job.id).state == "retrieved"
    assert flow.provider.calls == ["submit:ECF-2", "verify:REQ-ECF-2"], "no retrieve call spent"
    (artifact,) = flow.store.jobs.artifacts(job.id)
    assert artifact.kind == "json" and Path(artifact.path).read_bytes() == record
    issued = next(e for e in flow.store.jobs.events(job.id) if e.to_state == "issued")
    assert "1921: monto ajustado" in (issued.message or "")


def test_polls_of_a_provider_counted_per_call_wait_for_the_sweep_and_go_out_together(flow: Flow) -> None:
    flow.provider.polls_through_sweep = True
    jobs = [flow.enqueue(f"Q-{n}") for n in range(5)]
    flow.deliver()
    assert [m for m in flow.sent if m.task == "einvoice.verify"] == [], "no verify message per document"
    assert {flow.job(j.id).state for j in jobs} == {"submitted"}
    due = [flow.job(j.id).next_attempt_at for j in jobs]
    assert all(when is not None for when in due)
    due_at = max(when for when in due if when is not None)
    assert flow.sweep() == 0, "nothing is due before the first poll"
    flow.clock.now = due_at
    flow.provider.verifies.extend([PENDING] * 5)
    assert flow.sweep() == 5
    assert [(m.task, len(m.job_ids)) for m in flow.outbox] == [("einvoice.verify", 5)]
    flow.deliver()
    assert flow.provider.batches == [5]
    assert flow.outbox == [], "a pending answer waits for the sweep too"
    flow.clock.advance(3600 * 0.5)
    assert flow.sweep() == 5
    flow.deliver()
    assert flow.provider.batches == [5, 5]
    assert {flow.job(j.id).state for j in jobs} == {"retrieved"}


def test_resuming_a_quota_pause_brings_the_parked_jobs_back_now(flow: Flow) -> None:
    renews = flow.clock.now + timedelta(days=20)
    flow.provider.submits.append(AccountPaused("plan spent", resume_at=renews))
    first, second = flow.enqueue("R-1"), flow.enqueue("R-2")
    flow.deliver()
    assert {flow.job(first.id).next_attempt_at, flow.job(second.id).next_attempt_at} == {renews}
    flow.clock.advance(60)
    assert flow.sweep() == 0
    lifted = flow.store.pauses.resume_provider("memory")
    assert lifted is not None and lifted.kind == "quota"
    assert flow.sweep() == 2, "both jobs go out at the next sweep, not next month"
    flow.deliver()
    assert {flow.job(first.id).state, flow.job(second.id).state} == {"retrieved"}


def test_a_failed_poll_of_such_a_provider_also_waits_for_the_sweep(flow: Flow) -> None:
    flow.provider.polls_through_sweep = True
    job = flow.enqueue("Q-ERR")
    flow.deliver()
    flow.clock.now = flow.job(job.id).next_attempt_at or flow.clock.now
    flow.provider.verifies.append(TransientError("gateway timeout"))
    assert flow.sweep() == 1
    flow.deliver()
    assert flow.job(job.id).state == "submitted" and flow.outbox == [], "the retry waits in the database"
    flow.clock.advance(120)
    assert flow.sweep() == 1
    flow.deliver()
    assert flow.job(job.id).state == "retrieved"


def test_a_file_sent_inline_and_linked_again_is_archived_once_the_linked_copy_kept(pg_flow: Flow) -> None:
    flow = pg_flow
    inline = b"<cfdi:Comprobante inline='1'/>"
    issued = DocumentIds(guid="6f1c2b3a-0d4e-4f5a-8b6c-7d8e9fa0b1c2", year=2026)
    flow.provider.verifies.append(VerifyResult(VerifyStatus.ISSUED, issued, files={"xml": inline}))
    job = flow.enqueue("TWICE")
    flow.deliver()
    assert flow.job(job.id).state == "retrieved"
    kept = {a.kind: a for a in flow.store.jobs.artifacts(job.id)}
    assert sorted(kept) == ["pdf", "xml"]
    assert kept["xml"].sha256 == hashlib.sha256(XML).hexdigest(), "the linked copy came last and is kept"
    assert Path(kept["xml"].path).read_bytes() == XML


def test_a_poll_that_ran_late_teaches_the_processing_time_from_when_it_was_due(flow: Flow) -> None:
    job = flow.enqueue("LATE-1")
    flow.provider.verifies.append(PENDING)
    flow.deliver(limit=2)  # the submit, then a first poll that finds it pending
    [poll] = flow.outbox
    flow.outbox.clear()
    flow.clock.advance(poll.countdown)
    due = flow.clock()
    flow.clock.advance(20.0)  # the workers were behind
    assert flow.run(poll.task, poll.job_ids, due_at=due) == {job.id: "retrieved"}
    submitted = flow.job(job.id).submitted_at
    assert submitted is not None
    [(_, lower, upper)] = flow.store.stats.processing_samples(flow.provider.name)
    assert upper == pytest.approx((due - submitted).total_seconds()), "the backlog is no processing time"
    assert lower is not None and lower < upper
    on_time = flow.enqueue("LATE-2")
    flow.deliver()
    assert flow.job(on_time.id).poll_due_at is not None, "a poll sent with a countdown knows when it was due"
