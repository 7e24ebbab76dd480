"""The step runner: executes any declared step of any workflow, and the sweep that feeds it.

One run of a step:
1. claim its jobs in one transaction (those still in the step's state and not leased);
2. expire the ones past their deadline, and hold back the ones whose provider is paused;
3. call the step function, outside any transaction; whatever it raises becomes an outcome;
4. turn the outcomes into one record: transitions, events, files, links, next schedule and the
   provider's breaker, all in one transaction;
5. after commit, publish the messages for steps due within the broker's horizon.
Longer waits stay in `next_attempt_at`, where the sweep finds them.

Every message may be delivered twice: a job that is not claimable is someone else's, and a record
whose compare-and-set finds the job moved on applies nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError, StatementError

from models import BreakerPolicy, Change, Claimed, ErrorInfo, Health, Note, PauseInfo, Step
from models.pauses import AUTH_PAUSE, OUTAGE_PAUSE
from models.steps import Gather
from providers.base import AccountPaused, AuthError, PermanentError, RateLimitedError, TransientError, unanswered
from tasks.doorbell import Doorbell
from tasks.outcomes import Crashed, Errored, Moved, Outcome, Stayed
from tasks.policy import Policy, retry_delay
from tasks.services import Dispatch, Services
from tasks.workflow import StepContext, StepSpec, Workflow
from tasks.workflows import kind_of, workflow

log = logging.getLogger("einvoice.tasks")

ACTOR = "worker"
MAX_ERROR_MESSAGE = 2000


@dataclass(frozen=True)
class Blocked:
    """The provider is paused: the job keeps its state and goes out once the pause ends."""

    pause: PauseInfo


@dataclass(frozen=True)
class Held:
    """Another step is confirming a login-guarded provider's credentials: wait, without an event
    (no call was made), and look again shortly."""


@dataclass(frozen=True)
class Message:
    spec: StepSpec
    job_id: str
    countdown: float
    provider: str


def breaker_policy(pol: Policy) -> BreakerPolicy:
    return BreakerPolicy(
        open_after_failures=pol.outage_after_failures,
        probe_base=timedelta(seconds=pol.outage_probe_seconds),
        probe_cap=timedelta(seconds=pol.outage_probe_cap_seconds),
    )


def run_step(
    services: Services,
    spec: StepSpec,
    job_ids: Sequence[str],
    *,
    actor: str = ACTOR,
    wake: str | None = None,
    due_at: datetime | None = None,
) -> dict[str, str]:
    """Run one step for the given jobs; returns what happened to each claimed job, by name.

    `wake`: the message answers this provider's doorbell, and gathers its waiting jobs even when
    it names none; a full batch rings for the next one at once.
    """
    pol = services.policy
    lease = pol.lease_for if spec.lease_by_size else pol.lease_for(0)
    gather = None
    if wake is not None:
        services.doorbell.answer(spec.name, wake)
    if spec.gather and len(job_ids) < pol.submit_batch:
        due_by = services.now() + timedelta(seconds=pol.redispatch_seconds)
        gather = Gather(
            pol.submit_batch - len(job_ids),
            due_by,
            pol.gather_max_bytes,
            pol.calls_at_once,
            kind=kind_of(spec),
            provider=wake,
        )
    claimed = services.store.steps.claim(
        job_ids, spec.state, lease, count_attempt=spec.count_attempt, with_payload=spec.with_payload, gather=gather
    )
    if not claimed:
        return {}
    wf = workflow(claimed[0].job.kind)
    ctx = StepContext(services, services.now(), due_at)
    decided: dict[str, Outcome | Blocked | Held] = {}
    callable_jobs: list[Claimed] = []
    for item in claimed:
        job = item.job
        if spec.deadline and spec.expire_to and job.deadline_at is not None and ctx.now > job.deadline_at:
            error = ErrorInfo("deadline", "no final answer before the deadline")
            decided[job.id] = Moved((Step(spec.expire_to, error.message, error=error),), answered=False)
        else:
            callable_jobs.append(item)
    allowed = _through_breaker(services, ctx.now, callable_jobs, decided, guarded=spec.guards_logins)
    if (
        wake is not None
        and gather is not None
        and len(claimed) >= pol.submit_batch
        and len(allowed) == len(callable_jobs)
    ):
        # The next batch is claimed while this one calls; a batch the breaker held back stops the
        # chain, and the sweep rings again once the provider is let through.
        ring(services.doorbell, services.dispatch, spec, wake)
    if allowed:
        decided.update(_call(spec, ctx, allowed))
    changes: list[Change] = []
    messages: list[Message | None] = []
    health: dict[str, Health] = {}
    for item in claimed:
        outcome = decided[item.job.id]
        change, message, seen = _conclude(ctx, wf, spec, item, outcome)
        changes.append(change)
        messages.append(message)
        if seen is not None:
            seen = replace(seen, guarded=spec.guards_logins)
            health[seen.provider] = _worse(health.get(seen.provider), seen)
    applied = _record(services, changes, actor, list(health.values()))
    _send(services, [m for m, ok in zip(messages, applied, strict=True) if ok and m is not None])
    return {item.job.id: _name(decided[item.job.id]) for item, ok in zip(claimed, applied, strict=True) if ok}


def ring(doorbell: Doorbell, dispatch: Dispatch, spec: StepSpec, provider: str, job_ids: Sequence[str] = ()) -> None:
    """Wake a gathering step for `provider` unless a wake-up is already pending (`tasks.doorbell`)."""
    if doorbell.ring(spec.name, provider):
        dispatch(spec.name, spec.queue, list(job_ids), 0.0, wake=provider)


def gatherable(policy: Policy, spec: StepSpec, size_bytes: int) -> bool:
    """Whether a wake-up of this step would claim a waiting job of this size; a larger document
    needs a message of its own."""
    return spec.gather and policy.submit_batch > 1 and size_bytes <= policy.gather_max_bytes


def _send(services: Services, messages: list[Message]) -> None:
    """Publish the batch's next messages; those of a batch step for one provider due within the
    same second go out as one message, up to the provider's batch size.

    A countdown is rounded up to the second: a job's `next_attempt_at` lies a redispatch grace past
    its own, so the sweep never takes the later message for a lost one.
    """
    groups: dict[tuple[str, str, float], list[Message]] = {}
    for message in messages:
        if message.spec.batch:
            groups.setdefault((message.spec.name, message.provider, math.ceil(message.countdown)), []).append(message)
        else:
            services.dispatch(message.spec.name, message.spec.queue, [message.job_id], message.countdown)
    for (_, provider, countdown), group in groups.items():
        spec = group[0].spec
        size = max(1, services.provider(provider).batch_size)
        for chunk in _chunks([m.job_id for m in group], size):
            services.dispatch(spec.name, spec.queue, chunk, countdown if len(group) > 1 else group[0].countdown)


def _through_breaker(
    services: Services,
    now: datetime,
    jobs: list[Claimed],
    decided: dict[str, Outcome | Blocked | Held],
    *,
    guarded: bool = False,
) -> list[Claimed]:
    """Hold back the jobs of paused providers; through an outage whose wait is over, one probe.

    `guarded`: the provider locks accounts, so while its credentials are unconfirmed one job of
    one step at a time passes (`Pauses.claim_login`), whatever the cached breaker says.
    """
    allowed: list[Claimed] = []
    by_provider: dict[str, list[Claimed]] = {}
    for item in jobs:
        by_provider.setdefault(item.job.provider, []).append(item)
    breakers = services.store.pauses.breakers()
    for provider, group in by_provider.items():
        info = breakers.get(provider)
        passing = group
        if info is not None and info.kind != OUTAGE_PAUSE and info.blocks(now):
            passing = []
        elif info is not None and info.kind == OUTAGE_PAUSE:
            waiting = info.until is not None and info.until > now
            won = not waiting and services.store.pauses.claim_probe(provider, breaker_policy(services.policy))
            passing = group[:1] if won else []
            if won:
                log.warning("provider=%s probing during contingency with job=%s", provider, group[0].job.id)
        elif guarded and (info is None or not info.logins_confirmed):
            lease = services.policy.lease_for(0)
            verdict = services.store.pauses.claim_login(provider, lease)
            if verdict != "confirmed":
                passing = group[:1] if verdict == "won" else []
                if verdict == "won":
                    log.info("provider=%s credentials unconfirmed: job=%s calls alone", provider, group[0].job.id)
                for item in group[len(passing) :]:
                    decided[item.job.id] = Held()
        # `passing` is always a prefix of the group: the whole group, its first job, or none.
        allowed.extend(passing)
        for item in group[len(passing) :]:
            if item.job.id not in decided:
                assert info is not None
                decided[item.job.id] = Blocked(info)
    return allowed


def _call(spec: StepSpec, ctx: StepContext, jobs: list[Claimed]) -> dict[str, Outcome]:
    """The step function, with every surprise turned into an outcome of the job it concerns."""
    try:
        outcomes = dict(spec.run(ctx, jobs))
    except Exception as exc:
        return {item.job.id: Crashed(exc) for item in jobs}
    result: dict[str, Outcome] = {}
    for item in jobs:
        outcome = outcomes.get(item.job.id)
        if outcome is None:
            outcome = Crashed(LookupError(f"step {spec.name} gave no outcome for this job"))
        elif not isinstance(outcome, (*spec.outcomes, Crashed)):
            outcome = Crashed(TypeError(f"step {spec.name} may not conclude {type(outcome).__name__}"))
        result[item.job.id] = outcome
    return result


def _schedule(
    ctx: StepContext, spec: StepSpec | None, next_in: float | None, provider: str | None = None
) -> tuple[datetime | None, float | None]:
    """(next_attempt_at, countdown of a message to send now, or None).

    A short wait is handed to the broker and `next_attempt_at` set past it by the redispatch
    grace, so the sweep touches the job only if that message is lost; a long one stays in the
    database for the sweep. So does any wait for a batch step of a provider whose polls go through
    the sweep (`polls_through_sweep`): the sweep gathers the due ones into batches.
    """
    if spec is None or next_in is None:
        return None, None
    pol = ctx.policy
    if spec.batch and provider is not None and ctx.provider(provider).polls_through_sweep:
        return ctx.now + timedelta(seconds=next_in), None
    if next_in <= pol.max_countdown_seconds:
        return ctx.now + timedelta(seconds=next_in + pol.redispatch_seconds), max(0.0, next_in)
    return ctx.now + timedelta(seconds=next_in), None


def _conclude(
    ctx: StepContext, wf: Workflow, spec: StepSpec, item: Claimed, outcome: Outcome | Blocked | Held
) -> tuple[Change, Message | None, Health | None]:
    """One job's outcome as the change to record, the message to send after, and what it says of
    the provider."""
    job = item.job
    attempt = job.attempts if spec.count_attempt else None
    base = Change(job.id, spec.state, attempt=attempt, kind=job.kind)
    if isinstance(outcome, Moved):
        target = wf.step_for(outcome.steps[-1].to_state)
        when, countdown = _schedule(ctx, target, outcome.next_in, job.provider)
        change = replace(
            base,
            steps=outcome.steps,
            fields=outcome.fields,
            next_attempt_at=when,
            artifacts=outcome.artifacts,
            wake_children=any(step.to_state in wf.wakes_children_in for step in outcome.steps),
        )
        message = (
            Message(target, job.id, countdown, job.provider) if target is not None and countdown is not None else None
        )
        return change, message, Health(job.provider, "answered") if outcome.answered else None
    if isinstance(outcome, Stayed):
        when, countdown = _schedule(ctx, spec, outcome.next_in, job.provider)
        change = replace(
            base, note=outcome.note, fields=outcome.fields, next_attempt_at=when, artifacts=outcome.artifacts
        )
        message = Message(spec, job.id, countdown, job.provider) if countdown is not None else None
        return change, message, Health(job.provider, "answered") if outcome.answered else None
    if isinstance(outcome, Blocked):
        pause = outcome.pause
        info = ErrorInfo("paused", f"not sent: provider {job.provider} is paused ({pause.kind}): {pause.reason}")
        until = pause.until if pause.kind != AUTH_PAUSE and pause.until is not None else ctx.now
        return replace(base, note=Note("error", info.message, info), next_attempt_at=until), None, None
    if isinstance(outcome, Held):
        wait = timedelta(seconds=ctx.policy.retry_base_seconds)
        return replace(base, attempt=None, next_attempt_at=ctx.now + wait), None, None
    return _failure(ctx, wf, spec, item, outcome, base)


def _failure(
    ctx: StepContext, wf: Workflow, spec: StepSpec, item: Claimed, outcome: Errored | Crashed, base: Change
) -> tuple[Change, Message | None, Health | None]:
    """Permanent errors fail the job; auth pauses the provider; the rest waits and tries again."""
    job, pol = item.job, ctx.policy
    held = isinstance(outcome, Errored) and not outcome.sent
    if spec.count_attempt:
        attempt = job.attempts - 1 if held else job.attempts
        base = replace(base, attempt=attempt, fields={"attempts": attempt} if held else {})
    else:
        attempt = job.attempts + 1
        base = replace(base, attempt=attempt, fields={"attempts": attempt})
    exc = outcome.error
    if isinstance(outcome, Crashed):
        info = ErrorInfo("unexpected", f"{type(exc).__name__}: {exc}"[:MAX_ERROR_MESSAGE])
        log.error("job=%s step=%s unexpected error: %s", job.id, spec.name, info.message, exc_info=exc)
        seen: Health | None = None
        retry_after: float | None = None
    else:
        error = outcome.error
        info = ErrorInfo(error.error_class.value, str(error)[:MAX_ERROR_MESSAGE], error.code)
        retry_after = error.retry_after
        if isinstance(error, AuthError):
            log.error(
                "provider=%s refused our credentials (job=%s internal_id=%s: %s); every call to it is paused "
                "until `einvoice resume %s`",
                job.provider,
                job.id,
                job.internal_id,
                error.message,
                job.provider,
            )
            change = replace(base, note=Note("error", info.message, info), next_attempt_at=ctx.now)
            return change, None, Health(job.provider, "auth", f"credentials refused: {error}")
        if isinstance(error, AccountPaused):
            log.error("provider=%s account paused until %s: %s", job.provider, error.resume_at, error.message)
            change = replace(base, note=Note("error", info.message, info), next_attempt_at=error.resume_at)
            return change, None, Health(job.provider, "quota", info.message, until=error.resume_at)
        if isinstance(error, PermanentError) and spec.fail_to is not None:
            log.warning("job=%s internal_id=%s failed: %s", job.id, job.internal_id, info.message)
            step = Step(spec.fail_to, info.message, error=info)
            return replace(base, steps=(step,)), None, Health(job.provider, "answered")
        if unanswered(error):
            seen = Health(job.provider, "failed", error.message)
        elif isinstance(error, TransientError):
            # A garbled answer about one document still shows the provider up.
            seen = Health(job.provider, "answered")
        elif isinstance(error, RateLimitedError):
            seen = None
        else:
            seen = Health(job.provider, "answered")
    delay = retry_delay(pol, attempt, retry_after)
    if isinstance(exc, RateLimitedError):
        delay = max(delay, pol.rate_limited_min_seconds)
    if spec.resend_guard and not held and not isinstance(exc, (RateLimitedError, PermanentError)):
        delay = max(delay, pol.resend_after_seconds)
    deadline = job.deadline_at
    if spec.expire_to and deadline is not None and ctx.now + timedelta(seconds=delay) > deadline:
        text = f"no final answer before the deadline; last error: {info.message}"
        return replace(base, steps=(Step(spec.expire_to, text, error=info),)), None, seen
    when, countdown = _schedule(ctx, spec, delay, job.provider)
    note = Note("error", f"{info.message}; next attempt at {when.isoformat() if when else 'none'}", info)
    log.warning("job=%s %s error on attempt %d; retry in %.1fs", job.id, info.error_class, attempt, delay)
    message = Message(spec, job.id, countdown, job.provider) if countdown is not None else None
    return replace(base, note=note, next_attempt_at=when), message, seen


def _worse(current: Health | None, new: Health) -> Health:
    """One health per provider and step: refused credentials trump everything, one answer shows
    the provider is up even if another call of the batch failed, and failures add up."""
    rank = {"auth": 3, "quota": 2, "answered": 1, "failed": 0}
    if current is None or rank[new.outcome] > rank[current.outcome]:
        return new
    if current.outcome == new.outcome == "failed":
        return replace(current, failures=current.failures + new.failures)
    return current


def _record(services: Services, changes: list[Change], actor: str, health: list[Health]) -> list[bool]:
    """Record the batch at once; a change the database refuses is recorded alone as an error, so
    one bad value never loses the rest of the batch nor leaves its job without an event."""
    steps = services.store.steps
    policy = breaker_policy(services.policy)
    try:
        return steps.record(changes, actor=actor, health=health, breaker=policy)
    except (DBAPIError, StatementError) as exc:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise
        log.error("a batch of %d changes was refused (%s); recording them one by one", len(changes), exc)
    applied: list[bool] = []
    for change in changes:
        try:
            applied.extend(steps.record([change], actor=actor, breaker=policy))
        except (DBAPIError, StatementError) as exc:
            applied.append(False)
            _record_refusal(services, change, actor, exc)
    steps.record([], actor=actor, health=health, breaker=policy)
    return applied


def _record_refusal(services: Services, change: Change, actor: str, exc: Exception) -> None:
    info = ErrorInfo("unexpected", f"the database refused this step's result: {type(exc).__name__}"[:200])
    retry_at = services.now() + timedelta(seconds=services.policy.retry_cap_seconds)
    note = Change(
        change.job_id,
        change.from_state,
        note=Note("error", info.message, info),
        next_attempt_at=retry_at,
        kind=change.kind,
    )
    services.store.steps.record([note], actor=actor)


def _name(outcome: Outcome | Blocked | Held) -> str:
    if isinstance(outcome, Moved):
        return str(outcome.steps[-1].to_state)
    if isinstance(outcome, Stayed):
        return outcome.note.kind
    if isinstance(outcome, Errored):
        return outcome.error.error_class.value
    if isinstance(outcome, Crashed):
        return "unexpected"
    if isinstance(outcome, Held):
        return "held"
    return "paused"


def sweep(services: Services) -> int:
    """Dispatch every job whose next step is due: polls, retries, lost messages, links to refresh.

    Jobs of one provider waiting in a batch step go out together, up to the provider's batch size.
    Those a gathering step would claim together ring its doorbell instead: a backlog longer than
    the redispatch grace is no lost message, and one wake-up drains it batch after batch.
    """
    pol = services.policy
    total = 0
    while True:
        due = services.store.schedule.take_due(
            limit=pol.sweep_batch, redispatch_after=timedelta(seconds=pol.redispatch_seconds)
        )
        groups: dict[tuple[StepSpec, str], list[str]] = {}
        rung: dict[tuple[StepSpec, str], str] = {}
        for row in due:
            spec = workflow(row.kind).step_for(row.state)
            if spec is None:
                continue
            if gatherable(pol, spec, row.size_bytes):
                rung.setdefault((spec, row.provider), row.job_id)
            else:
                groups.setdefault((spec, row.provider), []).append(row.job_id)
        for (spec, provider), job_id in rung.items():
            ring(services.doorbell, services.dispatch, spec, provider, [job_id])
        for (spec, provider), ids in groups.items():
            size = max(1, services.provider(provider).batch_size) if spec.batch else 1
            for chunk in _chunks(ids, size):
                services.dispatch(spec.name, spec.queue, chunk, 0.0)
        total += len(due)
        if len(due) < pol.sweep_batch:
            break
    if total:
        log.info("sweep dispatched %d jobs", total)
    return total


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
