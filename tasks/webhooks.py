"""Delivering webhooks: a beat sweep claims due deliveries, a task posts each batch of them, signed.

The outbox rows (see `models.webhooks`) are the schedule: a failed attempt moves the row's
`next_attempt_at` on (exponential backoff with jitter, for about three days), a claimed row whose
worker died comes due again when its claim runs out, and nothing lives only in the broker. Posts
are signed with the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
`webhook-signature`), and only a 2xx answer counts. A 410 Gone disables the subscription, as the
Standard Webhooks specification recommends: the receiver has told us the endpoint is gone for good,
and posting to it for three more days would only fill its logs and our dead letters.

Destinations follow the same rule as provider links: a URL whose host resolves to a private,
loopback, link-local or otherwise non-public address is refused (unless
`EINVOICE_WEBHOOK_ALLOW_PRIVATE=1`), so a subscription cannot make the worker probe the inside of
its own network.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from celery import current_app, shared_task
from prometheus_client import Counter, Histogram
from standardwebhooks.webhooks import Webhook

from models.access import ServerSecret
from models.webhooks import (
    Failure,
    Outgoing,
    disable_subscription,
    job_from_snapshot,
    outgoing_many,
    record_delivered,
    record_failed,
    take_due,
)
from tasks.context import services

log = logging.getLogger("einvoice.webhooks")

DELIVER = "einvoice.webhook.deliver"
SWEEP = "einvoice.webhook.sweep"
QUEUE = "poll"


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    return float(raw) if raw else default


@dataclass(frozen=True)
class DeliveryPolicy:
    """How deliveries are timed; every figure can be set as `EINVOICE_WEBHOOK_<NAME>`."""

    timeout_seconds: float = 10.0
    retry_base_seconds: float = 5.0
    retry_cap_seconds: float = 6 * 3600.0
    give_up_seconds: float = 3 * 24 * 3600.0
    sweep_seconds: float = 1.0
    sweep_batch: int = 200
    batch_size: int = 20
    allow_private: bool = False

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery is left alone: every post of its batch, then time to record them.

        A batch posts one delivery after the other and records them all at the end, so the claim
        must outlast `batch_size` timeouts, or a slow receiver's batch would come due again while
        still being posted and go out twice. The alternative, a deadline per batch, would cut a slow
        receiver's batch short and leave its tail waiting for the lease anyway; the price of the
        longer lease is only that a dead worker's deliveries come back later (minutes, against a
        retry schedule of three days).
        """
        return timedelta(seconds=self.timeout_seconds * self.batch_size + 20)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeliveryPolicy:
        env = os.environ if environ is None else environ
        p = "EINVOICE_WEBHOOK_"
        return cls(
            timeout_seconds=_env_float(env, p + "TIMEOUT_SECONDS", cls.timeout_seconds),
            retry_base_seconds=_env_float(env, p + "RETRY_BASE_SECONDS", cls.retry_base_seconds),
            retry_cap_seconds=_env_float(env, p + "RETRY_CAP_SECONDS", cls.retry_cap_seconds),
            give_up_seconds=_env_float(env, p + "GIVE_UP_SECONDS", cls.give_up_seconds),
            sweep_seconds=_env_float(env, p + "SWEEP_SECONDS", cls.sweep_seconds),
            sweep_batch=int(_env_float(env, p + "SWEEP_BATCH", cls.sweep_batch)),
            batch_size=max(1, int(_env_float(env, p + "BATCH_SIZE", cls.batch_size))),
            allow_private=env.get(p + "ALLOW_PRIVATE", "") in ("1", "true", "yes"),
        )

    def next_attempt(self, occurred_at: datetime, attempts: int, now: datetime, rng: random.Random) -> datetime | None:
        """When to try again after `attempts` failures, or None once the three days are over.

        Equal jitter (half fixed, half random) spreads the retries of many deliveries that failed
        together (a receiver's outage) without ever retrying much sooner than the backoff says.
        """
        step = min(self.retry_cap_seconds, self.retry_base_seconds * 2 ** min(attempts - 1, 40))
        delay = step / 2 + rng.uniform(0, step / 2)
        when = now + timedelta(seconds=delay)
        if when > occurred_at + timedelta(seconds=self.give_up_seconds):
            return None
        return when


# The sweep runs from beat; including this module in a worker (`-I tasks.webhooks`) is all it takes.
BEAT_ENTRY = {
    "task": SWEEP,
    "schedule": DeliveryPolicy.from_env().sweep_seconds,
    "options": {"queue": QUEUE, "expires": DeliveryPolicy.from_env().sweep_seconds * 5},
}
current_app.conf.beat_schedule.setdefault("webhooks", BEAT_ENTRY)


# ------------------------------------------------------------------------ SSRF


class BlockedDestination(ValueError):
    pass


def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuse URLs that are not http(s) or whose host resolves to a non-public address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlockedDestination("only http and https URLs with a host are allowed")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        raise BlockedDestination(f"host does not resolve ({type(exc).__name__})") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            raise BlockedDestination(f"host resolves to a non-public address ({address})")


# --------------------------------------------------------------------- metrics

_metrics_lock = threading.Lock()
_metrics: tuple[Counter, Histogram] | None = None
_LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600, 72 * 3600)


def _observe(outcome: str, lag: float | None = None) -> None:
    """Created on first use, inside a worker whose metrics directory is already chosen (multiprocess)."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = (
                Counter(
                    "einvoice_webhook_deliveries_total",
                    "Webhook delivery attempts by outcome: delivered, failed, dead, gone, blocked.",
                    ["outcome"],
                ),
                Histogram(
                    "einvoice_webhook_delivery_lag_seconds",
                    "From the transition to the receiver's 2xx, retries included.",
                    buckets=_LAG_BUCKETS,
                ),
            )
    _metrics[0].labels(outcome).inc()
    if lag is not None:
        _metrics[1].observe(lag)


# ----------------------------------------------------------------------- tasks

_rng = random.Random()
_client_lock = threading.Lock()
_client: httpx.Client | None = None
_client_pid = 0


def _http() -> httpx.Client:
    """One pool per process; a forked child makes its own."""
    global _client, _client_pid
    with _client_lock:
        if _client is None or _client_pid != os.getpid():
            _client = httpx.Client(follow_redirects=False, limits=httpx.Limits(max_connections=64))
            _client_pid = os.getpid()
        return _client


def render(item: Outgoing) -> str:
    """The body posted: type, time and the status JSON of the object as the transition left it."""
    data: Any = json.loads(item.body)
    if item.job_id is not None:
        from worker.views import job_status  # the one definition of the status JSON

        data = job_status(job_from_snapshot(data))
    return json.dumps(
        {"type": item.event_type, "timestamp": item.occurred_at.isoformat(), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


@shared_task(name=SWEEP, ignore_result=True)
def sweep() -> int:
    """Dispatch due deliveries in batches; when none is due this is one statement.

    A batch holds the deliveries of one subscription only, so a slow or dead receiver holds up its
    own deliveries and never another's. One message per batch rather than per delivery: publishing
    and running a task cost more CPU than the post itself.
    """
    pol, st = DeliveryPolicy.from_env(), services().store
    total = 0
    while True:
        with st.db.connection() as conn:
            due = take_due(conn, limit=pol.sweep_batch, lease=pol.lease, skip_locked=st.db.skip_locked)
        batches: dict[str, list[str]] = {}
        for delivery_id, subscription_id in due:
            batches.setdefault(subscription_id, []).append(delivery_id)
        for ids in batches.values():
            for start in range(0, len(ids), pol.batch_size):
                current_app.send_task(DELIVER, args=[ids[start : start + pol.batch_size]], queue=QUEUE)
        total += len(due)
        if len(due) < pol.sweep_batch:
            return total


@dataclass(frozen=True)
class _Attempt:
    item: Outgoing
    status: int | None
    error: str
    finished_at: datetime


def _post(item: Outgoing, pol: DeliveryPolicy) -> _Attempt:
    now = datetime.now(UTC)
    status: int | None = None
    try:
        check_destination(item.url, allow_private=pol.allow_private)
        signing = _server_secret().unseal(item.sealed_secret)
        body = render(item)
        headers = {
            "webhook-id": item.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(signing).sign(item.id, now, body),
            "content-type": "application/json",
            "user-agent": "einvoice-webhooks/1",
        }
        response = _http().post(item.url, content=body.encode(), headers=headers, timeout=pol.timeout_seconds)
        status = response.status_code
        error = f"HTTP {status}"
    except BlockedDestination as exc:
        error = f"destination refused: {exc}"
        _observe("blocked")
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}"
    return _Attempt(item, status, error, datetime.now(UTC))


@shared_task(name=DELIVER, acks_late=True, ignore_result=True)
def deliver(delivery_ids: str | list[str]) -> int:
    """Post a batch of deliveries one after the other and record every outcome in one transaction.

    A single id is a message from before batches. Deliveries already finished (a duplicate message)
    or of a disabled subscription are skipped. After a 410 Gone the subscription is disabled and the
    rest of its batch is not posted: disabling makes them dead letters, as it does every pending
    delivery of the subscription. Outcomes are recorded even when a post raises something
    unexpected, so the posts already made are not made again; the deliveries not yet recorded come
    back when their lease runs out.
    """
    pol, st = DeliveryPolicy.from_env(), services().store
    with st.db.connection() as conn:
        items = outgoing_many(conn, [delivery_ids] if isinstance(delivery_ids, str) else delivery_ids)
    attempts: list[_Attempt] = []
    gone: set[str] = set()
    try:
        for item in items:
            if item.subscription_id not in gone:
                attempts.append(_post(item, pol))
                if attempts[-1].status == 410:
                    gone.add(item.subscription_id)
    finally:
        delivered: list[tuple[str, int]] = []
        failures: list[Failure] = []
        for a in attempts:
            if a.status is not None and _ok(a.status):
                delivered.append((a.item.id, a.status))
            elif a.status == 410:
                failures.append(Failure(a.item.id, a.status, "410 Gone: subscription disabled", None))
            else:
                retry = pol.next_attempt(a.item.occurred_at, a.item.attempts + 1, a.finished_at, _rng)
                failures.append(Failure(a.item.id, a.status, a.error, retry))
        with st.db.connection() as conn:
            record_delivered(conn, delivered)
            record_failed(conn, failures)
            for subscription_id in gone:
                disable_subscription(conn, subscription_id, "the receiver answered 410 Gone")
        retries = {f.delivery_id: f.next_attempt_at for f in failures}
        for a in attempts:
            _report(a, retries.get(a.item.id))
    return len(delivered)


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def _report(a: _Attempt, retry_at: datetime | None) -> None:
    """Metrics and log of one attempt, once its outcome is committed."""
    item = a.item
    if _ok(a.status):
        _observe("delivered", (a.finished_at - item.occurred_at).total_seconds())
        log.info(
            "webhook=%s delivery=%s %s delivered (HTTP %s)", item.subscription_id, item.id, item.event_type, a.status
        )
    elif a.status == 410:
        _observe("gone")
        log.warning("webhook=%s answered 410 Gone; subscription disabled", item.subscription_id)
    else:
        _observe("failed" if retry_at else "dead")
        log.warning(
            "webhook=%s delivery=%s attempt %d failed (%s); %s",
            item.subscription_id,
            item.id,
            item.attempts + 1,
            a.error,
            f"next at {retry_at.isoformat()}" if retry_at else "dead letter",
        )


_secret_lock = threading.Lock()
_secret: tuple[str, ServerSecret] | None = None


def _server_secret() -> ServerSecret:
    """Derived once per process (and again only if the setting changes), not once per delivery."""
    global _secret
    env = os.environ
    source = env.get("EINVOICE_API_SECRET_FILE", "") + "\0" + env.get("EINVOICE_API_SECRET", "")
    with _secret_lock:
        if _secret is None or _secret[0] != source:
            embedded = str(current_app.conf.broker_url or "").startswith("filesystem://")
            _secret = (source, ServerSecret.load(embedded=embedded))
        return _secret[1]
