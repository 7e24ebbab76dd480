"""What a step may conclude about one job: typed values that the runner turns into one record.

A step never writes: it calls its provider and says what happened. The runner owns the rest
(claims, the breaker, retries and deadlines, the one transaction, the messages after commit), so
that every kind of job gets the same guarantees from the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models import ArtifactRecord, Note, Step
from providers.base import ProviderError


@dataclass(frozen=True)
class Moved:
    """The job moves on: one transition, or a chain committed at once (a synchronous answer).

    `next_in`: seconds until the next step of the new state is due; None when nothing is
    scheduled (a final state). `answered`: the provider was called and answered, which closes its
    breaker; False when the step decided without calling it, or when a later call of the same
    step got no answer.
    """

    steps: tuple[Step, ...]
    next_in: float | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    artifacts: tuple[ArtifactRecord, ...] = ()
    answered: bool = True


@dataclass(frozen=True)
class Stayed:
    """The job keeps its state, with an event saying why: still pending, links refreshed."""

    note: Note
    next_in: float | None
    fields: Mapping[str, Any] = field(default_factory=dict)
    artifacts: tuple[ArtifactRecord, ...] = ()
    answered: bool = True


@dataclass(frozen=True)
class Errored:
    """The provider call failed; the runner reacts by the error's class (retry, pause, fail).

    `sent` False: the call was never made, held back by another call of its batch (see
    `tasks.workflow.one_by_one`); the attempt its claim counted is given back, so a retry is not
    taken for a resend (which would first ask the provider whether the document arrived).
    """

    error: ProviderError
    sent: bool = True


@dataclass(frozen=True)
class Crashed:
    """Our own code raised something unexpected: recorded on the job and retried, never silent."""

    error: BaseException


Outcome = Moved | Stayed | Errored | Crashed
