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


def test_every_listed_transition_is_accepted() -> None:
    for from_state, to_state in TRANSITIONS:
        check_transition(from_state, to_state)


def test_paths_must_chain() -> None:
    q, s = JobState.QUEUED, JobState.SUBMITTED
    assert not is_valid_path([(None, q), (s, JobState.ISSUED)])
    assert not is_valid_path([(q, s)])


def test_invalid_and_retrieved_are_final_and_invalid_leads_only_back_to_the_queue() -> None:
    assert {JobState.RETRIEVED, JobState.INVALID, JobState.FAILED, JobState.EXPIRED} == FINAL
    assert {to for from_state, to in TRANSITIONS if from_state == JobState.INVALID} == {JobState.QUEUED}
