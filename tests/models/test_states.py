from __future__ import annotations

import pytest

from models.states import (
    FINAL,
    TRANSITIONS,
    IllegalTransition,
    JobState,
    check_transition,
    is_valid_path,
)


def test_happy_path_is_a_valid_path() -> None:
    q, s, i, r = JobState.QUEUED, JobState.SUBMITTED, JobState.ISSUED, JobState.RETRIEVED
    assert is_valid_path([(None, q), (q, s), (s, i), (i, r)])


@pytest.mark.parametrize(
    ("from_state", "to_state"),
    [
        (JobState.QUEUED, JobState.RETRIEVED),
        (JobState.RETRIEVED, JobState.QUEUED),
        (JobState.INVALID, JobState.SUBMITTED),
        (JobState.SUBMITTED, JobState.QUEUED),
        (None, JobState.SUBMITTED),
    ],
)
def test_forbidden_transitions_raise(from_state: JobState | None, to_state: JobState) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(from_state, to_state)


def test_the_invoice_machine_is_exactly_the_documented_one() -> None:
    """The table as DESIGN.md and the README describe it; a transition added or lost shows here."""
    q, s, i, r = JobState.QUEUED, JobState.SUBMITTED, JobState.ISSUED, JobState.RETRIEVED
    inv, f, x = JobState.INVALID, JobState.FAILED, JobState.EXPIRED
    documented = {
        (None, q), (None, inv),  # accepted, or refused locally
        (q, s), (q, inv), (q, f), (q, x),  # submit
        (inv, q),  # a corrected document under the same key
        (s, i), (s, f), (s, x),  # verify
        (i, r),  # retrieve
        (f, q), (x, q), (x, s),  # operator retry
    }  # fmt: skip
    assert documented == TRANSITIONS


def test_every_state_is_reachable_and_every_non_final_state_has_a_way_out() -> None:
    reachable: set[str | None] = {None}
    while True:
        grown = reachable | {to for frm, to in TRANSITIONS if frm in reachable}
        if grown == reachable:
            break
        reachable = grown
    assert reachable - {None} == set(JobState)
    for state in set(JobState) - FINAL:
        assert any(frm == state for frm, _ in TRANSITIONS), f"{state} is a dead end"


def test_paths_must_chain() -> None:
    q, s = JobState.QUEUED, JobState.SUBMITTED
    assert not is_valid_path([(None, q), (s, JobState.ISSUED)])
    assert not is_valid_path([(q, s)])


def test_invalid_and_retrieved_are_final_and_invalid_leads_only_back_to_the_queue() -> None:
    assert {JobState.RETRIEVED, JobState.INVALID, JobState.FAILED, JobState.EXPIRED} == FINAL
    assert {to for from_state, to in TRANSITIONS if from_state == JobState.INVALID} == {JobState.QUEUED}
