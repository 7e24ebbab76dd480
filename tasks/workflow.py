"""The shape of a workflow: which step runs in which state, what it may conclude, how it is run.

A kind of job is declared once (see `tasks/workflows.py`): its state machine and, for each state
that has work, a `StepSpec`. The runner (`tasks/runner.py`) executes any declared step the same
way, so a new kind is a declaration plus provider code, never an edit to the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from models import Claimed, Machine
from providers.base import AccountPaused, AuthError, Provider, ProviderError, RateLimitedError, unanswered
from tasks.outcomes import Crashed, Errored, Outcome
from tasks.policy import Policy, ProcessingModel
from tasks.services import Services


@dataclass(frozen=True)
class StepContext:
    """What a step function sees: the services, the time the step started, and when its message
    was due (None when it went out to run at once): `now` is later when the workers are behind."""

    services: Services
    now: datetime
    due_at: datetime | None = None

    @property
    def policy(self) -> Policy:
        return self.services.policy

    def provider(self, name: str) -> Provider:
        return self.services.provider(name)

    def processing_model(self, provider: str) -> ProcessingModel | None:
        return self.services.processing_model(provider)


StepFunction = Callable[[StepContext, Sequence[Claimed]], Mapping[str, Outcome]]


@dataclass(frozen=True)
class StepSpec:
    """One step of a workflow.

    - `name`: the Celery task that carries it; `queue`: where its messages go.
    - `batch`: one message may carry several jobs of one provider (up to the provider's
      `batch_size`); otherwise one job per message.
    - `lease_by_size`: the lease grows with the document (uploads, downloads).
    - `count_attempt`: every run is a provider attempt, counted in the claim; otherwise only
      failed calls count, so backoff grows from the last readable answer.
    - `with_payload`: the claim reads the document too.
    - `deadline`: a job past its deadline moves to `expire_to` instead of calling the provider.
    - `fail_to`: where a permanent provider error takes the job (None: it is retried).
    - `resend_guard`: a transient failure may have reached the provider, so the next try waits
      at least `resend_after_seconds` for the provider's own idempotency check to see the first.
    - `gather`: a message for one job also claims other small jobs of its provider waiting in
      this state whose messages are due (`Policy.submit_batch` jobs in all, documents up to
      `gather_max_bytes`); their own messages then find nothing to do. Documents arrive one
      message each; this serves them in batches, and the batch's next messages go out as one.
    - `outcomes`: what the step may conclude; anything else is a bug, recorded as one.
    - `guards_logins`: the provider locks an account after a few refused logins, so until a call
      has been answered since the last resume only one call at a time goes out
      (`models.pauses`, login guard).
    """

    name: str
    state: str
    queue: str
    run: StepFunction
    outcomes: tuple[type, ...]
    batch: bool = False
    lease_by_size: bool = False
    count_attempt: bool = False
    with_payload: bool = False
    deadline: bool = False
    fail_to: str | None = None
    expire_to: str | None = None
    resend_guard: bool = False
    guards_logins: bool = False
    gather: bool = False


@dataclass(frozen=True)
class Workflow:
    """A kind of job. `wakes_children_in`: entering one of these states makes the job's waiting
    children due (an invoice's addenda waits for the stamped XML of `retrieved`)."""

    kind: str
    machine: Machine
    steps: tuple[StepSpec, ...]
    wakes_children_in: frozenset[str] = frozenset()
    _by_state: dict[str, StepSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for spec in self.steps:
            if spec.state not in self.machine.active:
                raise ValueError(f"{self.kind}: step {spec.name} runs in {spec.state}, which is not active")
            self._by_state[spec.state] = spec

    def step_for(self, state: str) -> StepSpec | None:
        return self._by_state.get(state)


def side_by_side(call: Callable[[T], R], items: Sequence[T], width: int) -> list[R]:
    """`call` over `items`, up to `width` at once, results in order; `call` must not raise.

    A provider call is mostly waiting (the network, the provider, the disk's fsync of an archived
    file): a worker process that makes one call at a time leaves its core idle meanwhile. Each
    batch gets threads of its own (a tenth of a millisecond each, against calls of milliseconds):
    a pool shared by a threaded worker's tasks would make them queue for it.
    """
    if width <= 1 or len(items) <= 1:
        return [call(item) for item in items]
    with ThreadPoolExecutor(min(width, len(items)), thread_name_prefix="einvoice-call") as pool:
        return list(pool.map(call, items))


T = TypeVar("T")
R = TypeVar("R")
_PROVIDER_REFUSALS = (AuthError, AccountPaused, RateLimitedError)


def one_by_one(step: Callable[[StepContext, Claimed], Outcome]) -> StepFunction:
    """Run a single-job step over a batch, so that one job's failure is that job's alone.

    The first job goes alone; the rest then go up to `Policy.calls_at_once` at a time. An error
    that concerns the provider, not the document, stops the calls not yet made, whose jobs carry
    that error as theirs: a refusal (credentials, a paused account, a rate limit), since another
    call with refused credentials could lock the account; or no answer at all after the call's own
    retries, since the provider then looks down and the breaker should hear of it once, not once
    per document. Going first alone, a batch's first call finds either out before any other goes.
    """

    def run(ctx: StepContext, jobs: Sequence[Claimed]) -> dict[str, Outcome]:
        refusal: list[ProviderError] = []

        def one(claimed: Claimed) -> Outcome:
            if refusal:
                return Errored(refusal[0], sent=False)
            try:
                return step(ctx, claimed)
            except ProviderError as exc:
                if isinstance(exc, _PROVIDER_REFUSALS) or unanswered(exc):
                    refusal.append(exc)
                return Errored(exc)
            except Exception as exc:
                return Crashed(exc)

        outcomes = [one(jobs[0])] if jobs else []
        outcomes += side_by_side(one, jobs[1:], ctx.policy.calls_at_once)
        return {claimed.job.id: outcome for claimed, outcome in zip(jobs, outcomes, strict=True)}

    run.__name__ = step.__name__
    run.__doc__ = step.__doc__
    return run
