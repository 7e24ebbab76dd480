"""The state machine of a job: the only place that says which transitions exist."""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    ISSUED = "issued"
    RETRIEVED = "retrieved"
    INVALID = "invalid"
    FAILED = "failed"
    EXPIRED = "expired"


Q, S, ISS, R = JobState.QUEUED, JobState.SUBMITTED, JobState.ISSUED, JobState.RETRIEVED
INV, F, X = JobState.INVALID, JobState.FAILED, JobState.EXPIRED

# `None` is the state before the job exists: creation is a transition too, so every history starts
# with an event. Operator retries leave failed/expired back to the step that can make progress.
TRANSITIONS: frozenset[tuple[JobState | None, JobState]] = frozenset(
    {
        (None, Q),
        (None, INV),
        (Q, S),
        (Q, INV),
        (Q, F),
        (Q, X),
        (INV, Q),
        (S, ISS),
        (S, F),
        (S, X),
        (ISS, R),
        (F, Q),
        (X, Q),
        (X, S),
    }
)

# States in which the pipeline still has work to do; the sweeps look only at these.
ACTIVE: frozenset[JobState] = frozenset({Q, S, ISS, R})
FINAL: frozenset[JobState] = frozenset({R, INV, F, X})


class IllegalTransition(ValueError):
    pass


def check_transition(from_state: JobState | None, to_state: JobState) -> None:
    if (from_state, to_state) not in TRANSITIONS:
        raise IllegalTransition(f"transition {from_state} -> {to_state} is not allowed")


def is_valid_path(states: list[tuple[JobState | None, JobState]]) -> bool:
    """True when consecutive transitions chain (each starts where the previous ended) and all are allowed."""
    current: JobState | None = None
    for from_state, to_state in states:
        if from_state != current or (from_state, to_state) not in TRANSITIONS:
            return False
        current = to_state
    return True
