"""The state machines of jobs: for each kind, the only place that says which transitions exist.

A kind's machine is data: its transitions, the states in which work is still scheduled, and the
final states. What runs in each state is declared beside it in `tasks/workflows.py`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class JobState(enum.StrEnum):
    """The states of an invoice."""

    QUEUED = "queued"
    SUBMITTED = "submitted"
    ISSUED = "issued"
    RETRIEVED = "retrieved"
    INVALID = "invalid"
    FAILED = "failed"
    EXPIRED = "expired"


Q, S, ISS, R = JobState.QUEUED, JobState.SUBMITTED, JobState.ISSUED, JobState.RETRIEVED
INV, F, X = JobState.INVALID, JobState.FAILED, JobState.EXPIRED

Transition = tuple[str | None, str]


class IllegalTransition(ValueError):
    pass


@dataclass(frozen=True)
class Machine:
    """One kind's states. `None` is the state before the job exists: creation is a transition too,
    so every history starts with an event."""

    kind: str
    transitions: frozenset[Transition]
    active: frozenset[str]
    final: frozenset[str]

    def check(self, from_state: str | None, to_state: str) -> None:
        if (from_state, to_state) not in self.transitions:
            raise IllegalTransition(f"{self.kind}: transition {from_state} -> {to_state} is not allowed")

    def is_valid_path(self, states: list[Transition]) -> bool:
        """True when consecutive transitions chain (each starts where the previous ended) and all are allowed."""
        current: str | None = None
        for from_state, to_state in states:
            if from_state != current or (from_state, to_state) not in self.transitions:
                return False
            current = to_state
        return True


# Operator retries leave failed/expired back to the step that can make progress; a corrected
# document under the same key puts an invalid job back in the queue. `retrieved` is
# final for the invoice's fiscal life but still active: its links are refreshed on schedule.
INVOICE = Machine(
    kind="invoice",
    transitions=frozenset(
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
    ),
    active=frozenset({Q, S, ISS, R}),
    final=frozenset({R, INV, F, X}),
)


class AddendaState(enum.StrEnum):
    """The states of an invoice's addenda: it waits for the stamped XML, then is attached or fails.

    The addenda is a job of its own so that its failure never touches the invoice's fiscal state.
    """

    WAITING = "waiting"
    ATTACHED = "attached"
    FAILED = "failed"


ADDENDA = Machine(
    kind="addenda",
    transitions=frozenset(
        {
            (None, AddendaState.WAITING),
            (AddendaState.WAITING, AddendaState.ATTACHED),
            (AddendaState.WAITING, AddendaState.FAILED),
        }
    ),
    active=frozenset({AddendaState.WAITING}),
    final=frozenset({AddendaState.ATTACHED, AddendaState.FAILED}),
)


class DownloadState(enum.StrEnum):
    """The states of a SAT bulk-download request (MYSuite Descarga Masiva).

    `split`: SAT found the period too large (5003); its halves are child requests and the parent
    ends here. A request refused at registration (5003) is born `split`.
    """

    REGISTERED = "registered"
    READY = "ready"
    DOWNLOADED = "downloaded"
    INDEXED = "indexed"
    EMPTY = "empty"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"
    SPLIT = "split"


_DR, _DY, _DD, _DI = DownloadState.REGISTERED, DownloadState.READY, DownloadState.DOWNLOADED, DownloadState.INDEXED
_DEND = (DownloadState.EMPTY, DownloadState.REJECTED, DownloadState.FAILED, DownloadState.EXPIRED, DownloadState.SPLIT)

DOWNLOAD = Machine(
    kind="download_request",
    transitions=frozenset(
        {
            (None, _DR),
            (None, DownloadState.SPLIT),
            (_DR, _DY),
            *((_DR, end) for end in _DEND),
            (_DY, _DD),
            (_DY, DownloadState.FAILED),
            (_DD, _DI),
            (_DD, DownloadState.FAILED),
        }
    ),
    active=frozenset({_DR, _DY, _DD}),
    final=frozenset({_DI, *_DEND}),
)

MACHINES: dict[str, Machine] = {INVOICE.kind: INVOICE, ADDENDA.kind: ADDENDA, DOWNLOAD.kind: DOWNLOAD}

# The invoice's tables under their historical names.
TRANSITIONS = INVOICE.transitions
ACTIVE = INVOICE.active
FINAL = INVOICE.final


def machine(kind: str) -> Machine:
    try:
        return MACHINES[kind]
    except KeyError:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(MACHINES))}") from None


def active_states() -> frozenset[str]:
    """Every state of every kind in which work is still scheduled: what the sweep looks at."""
    return frozenset().union(*(m.active for m in MACHINES.values()))


def final_states() -> frozenset[str]:
    return frozenset().union(*(m.final for m in MACHINES.values()))


def check_transition(from_state: JobState | None, to_state: JobState) -> None:
    INVOICE.check(from_state, to_state)


def is_valid_path(states: list[Transition]) -> bool:
    return INVOICE.is_valid_path(states)
