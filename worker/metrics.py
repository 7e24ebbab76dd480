"""Prometheus metrics that stay right under Celery's prefork pool, and the `einvoice metrics` server.

Every process that changes jobs or calls providers (worker children, thread-pool workers, the CLI,
an ERP's process using the producer API) writes its counters and histograms into memory-mapped
files under one directory, `PROMETHEUS_MULTIPROC_DIR` (default `$EINVOICE_HOME/metrics`), through
prometheus_client's multiprocess mode. Nothing is served from a worker: the separate `einvoice
metrics` process adds all those files up and, at every scrape, asks the database for the gauges
that describe the backlog (jobs by state, overdue work, oldest queued job, links about to expire).
Those are never kept in worker memory, so they are right no matter how many workers run or die.

Layout of the directory: each Celery worker node writes into `worker-<node name>/` and every other
process into `clients/`, one file per process and metric type, as prometheus_client does. Files of
processes that are gone are folded into one `*_archive.db` per type and folder (when a node starts,
in the parent before it forks its pool; when a client process exits), so the number of files stays
bounded while the sums never go down: Prometheus reads any drop of a counter as a reset and would
count everything still there as new, raising false alerts whenever one of several nodes restarted.
Files directly in the root are not ours (Flower writes its own metrics there when it inherits the
variable) and are ignored.

`einvoice_provider_up` uses the `mostrecent` multiprocess mode: the value is whatever the latest
request of any process said, whichever process made it. `max` would report a provider up as long
as one idle child had once succeeded, hiding an outage that every busy child is seeing; the
`livemostrecent` variant would drop the observation of a child that has exited (prefork recycles
children), letting an older success of a surviving child mask a newer failure. An observation is
about the provider, not about the process that made it, so it outlives the process (and is kept,
with its time, when the files are folded).
"""

from __future__ import annotations

import atexit
import base64
import binascii
import fcntl
import hmac
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from models import JobState, Store, TransitionInfo, utcnow, webhooks
from models.db import home_dir
from models.usage import DatabaseUsage
from providers.base import read_setting
from providers.mseller.budget import month_of
from providers.mseller.settings import MSellerSettings

log = logging.getLogger("einvoice.metrics")

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
CLIENTS = "clients"
WORKER_PREFIX = "worker-"
LOCK_FILE = ".lock"

# Outcomes after which the provider is known to answer; `transient` (timeouts, connection errors,
# 5xx, outages) and `auth` (credentials refused: the provider is unusable until someone acts) mean
# it is not usable now. A rejected document or a quota answer still proves the provider is there.
_UP_OUTCOMES = {"ok", "permanent", "rate_limited"}

# From a second (sync service, small document) to the two-day deadline.
_TIME_TO_ISSUE_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 48 * 3600)
_POLL_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100)
# Provider calls: a verify takes tens of milliseconds, a 40 MB upload can take minutes.
_REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def root_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory shared by every process of one installation (and by `einvoice metrics`)."""
    env = os.environ if environ is None else environ
    configured = env.get(ENV_DIR)
    return Path(configured).resolve() if configured else home_dir(env) / "metrics"


def node_dir_name(node: str) -> str:
    """A file-system-safe folder for a Celery node name such as `submit@host-1`."""
    return WORKER_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "_", node)


# ------------------------------------------------------------------------------- writing side

_lock = threading.Lock()
_process_dir: Path | None = None
_metrics: _Metrics | None = None


@dataclass(frozen=True)
class _Metrics:
    transitions: Counter
    requests: Counter
    request_seconds: Histogram
    time_to_issue: Histogram
    polls: Histogram
    provider_up: Gauge


def _use_dir(path: Path) -> None:
    """Point this process (and the children it forks) at `path`; must run before any metric exists.

    prometheus_client picks its value class when it is first imported, and the `celery` command
    imports it (through Flower's plugin) before our app is loaded, so multiprocess mode is switched
    on here explicitly rather than trusting the variable to have been set at process start.
    """
    global _process_dir
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_DIR] = str(path)
    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue()
    _process_dir = path


@contextmanager
def _locked(root: Path, *, exclusive: bool) -> Iterator[None]:
    """Folding files and reading them exclude each other, so a scrape never sees a half-folded folder."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_FILE).open("a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_archive(folder: Path, kind: str, entries: Iterable[tuple[str, float, float]], sources: list[Path]) -> None:
    """Write the new archive beside the old one, swap it in, then remove the files it now contains."""
    staging = folder / f".{kind}_archive.tmp"
    staging.unlink(missing_ok=True)
    out = MmapedDict(str(staging))
    try:
        for key, value, timestamp in entries:
            out.write_value(key, value, timestamp)
    finally:
        out.close()
    os.replace(staging, folder / f"{kind}_archive.db")
    for f in sources:
        f.unlink(missing_ok=True)


def _fold(folder: Path, files: list[Path]) -> None:
    """Fold the files of finished processes into the folder's archives, one per metric type.

    Counters and histograms are added up. Of the `mostrecent` gauges (provider_up) the latest
    observation of each series is kept, whichever process made it; other gauges are dropped, since
    they describe processes that no longer exist.
    """
    for kind in ("counter", "histogram"):
        archive = folder / f"{kind}_archive.db"
        sources = [f for f in files if f.name.startswith(kind + "_") and f != archive]
        if sources:
            merged = MultiProcessCollector.merge([str(f) for f in [*sources, archive] if f.exists()], accumulate=False)
            entries = (
                (mmap_key(m.name, x.name, list(x.labels), list(x.labels.values()), m.documentation), x.value, 0.0)
                for m in merged
                for x in m.samples
            )
            _replace_archive(folder, kind, entries, sources)
    kind = "gauge_mostrecent"
    archive = folder / f"{kind}_archive.db"
    sources = [f for f in files if f.name.startswith(kind + "_") and f != archive]
    if sources:
        latest: dict[str, tuple[float, float]] = {}
        for f in [archive, *sources]:
            if f.exists():
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(f)):
                    if key not in latest or timestamp >= latest[key][1]:
                        latest[key] = (value, timestamp)
        _replace_archive(folder, kind, ((k, v, t) for k, (v, t) in latest.items()), sources)
    for f in files:
        if f.name.startswith("gauge_") and f.exists() and not f.name.endswith("_archive.db"):
            f.unlink()


def start_worker_node(node: str) -> Path:
    """Called in a worker's parent process before it forks: fold the node's previous run, then use it."""
    with _lock:
        if _metrics is not None:
            raise RuntimeError("metrics were created before the worker chose its metrics directory")
        root = root_dir()
        path = root / node_dir_name(node)
        path.mkdir(parents=True, exist_ok=True)
        with _locked(root, exclusive=True):
            _fold(path, [f for f in path.glob("*.db") if not f.name.endswith("_archive.db")])
        _use_dir(path)
        return path


def _fold_own_files() -> None:
    """At a client process's exit: its files join the archive (other clients may still be running)."""
    folder = _process_dir
    if folder is None:
        return
    values.close_all_multiprocess_files()
    pid = os.getpid()
    own = [f for f in folder.glob("*.db") if f.name.endswith(f"_{pid}.db")]
    if own:
        with _locked(folder.parent, exclusive=True):
            _fold(folder, own)


def mark_dead(pid: int) -> None:
    """A pool child exited: drop its `live*` gauge files (its counters and histograms stay summed)."""
    if _process_dir is not None:
        mark_process_dead(pid, str(_process_dir))


def _get() -> _Metrics:
    global _metrics
    with _lock:
        if _metrics is None:
            if _process_dir is None:
                _use_dir(root_dir() / CLIENTS)
                atexit.register(_fold_own_files)
            _metrics = _Metrics(
                transitions=Counter(
                    "einvoice_transitions_total",
                    "Committed job state transitions; from_state is 'none' for a job's creation.",
                    ["provider", "from_state", "to_state"],
                ),
                requests=Counter(
                    "einvoice_provider_requests_total",
                    "Requests to providers by outcome: ok, transient, rate_limited, auth, permanent.",
                    ["provider", "operation", "outcome"],
                ),
                request_seconds=Histogram(
                    "einvoice_provider_request_duration_seconds",
                    "Duration of provider requests, whatever their outcome.",
                    ["provider", "operation"],
                    buckets=_REQUEST_BUCKETS,
                ),
                time_to_issue=Histogram(
                    "einvoice_time_to_issue_seconds",
                    "From a job's creation to the provider issuing the document.",
                    ["provider"],
                    buckets=_TIME_TO_ISSUE_BUCKETS,
                ),
                polls=Histogram(
                    "einvoice_polls_per_document",
                    "Verify polls a document needed before its final answer (issued, failed or expired).",
                    ["provider"],
                    buckets=_POLL_BUCKETS,
                ),
                provider_up=Gauge(
                    "einvoice_provider_up",
                    "1 when the latest request to the provider got an answer, 0 after an outage or auth failure.",
                    ["provider"],
                    multiprocess_mode="mostrecent",
                ),
            )
        return _metrics


def observe_transition(info: TransitionInfo) -> None:
    """Store observer: count every committed transition and time the ones that end a step."""
    m = _get()
    m.transitions.labels(info.provider, info.from_state or "none", info.to_state).inc()
    if info.from_state == JobState.SUBMITTED.value:
        m.polls.labels(info.provider).observe(info.polls)
        if info.to_state == JobState.ISSUED.value:
            created = info.created_at if info.created_at.tzinfo else info.created_at.replace(tzinfo=UTC)
            m.time_to_issue.labels(info.provider).observe(max(0.0, (utcnow() - created).total_seconds()))


def observe_request(provider: str, operation: str, outcome: str, seconds: float) -> None:
    """Provider request observer (see `providers.base.add_request_observer`)."""
    m = _get()
    m.requests.labels(provider, operation, outcome).inc()
    m.request_seconds.labels(provider, operation).observe(seconds)
    m.provider_up.labels(provider).set(1 if outcome in _UP_OUTCOMES else 0)


def instrument(store: Store) -> None:
    """Make a store report its transitions; ERP processes that use `worker.producer` call it too."""
    if observe_transition not in store.observers:
        store.observers.append(observe_transition)


# ------------------------------------------------------------------------------- serving side


class ProcessFilesCollector(Collector):
    """Sums the files of every process under the root, the way one process's registry would."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _files(self) -> list[str]:
        return sorted(str(p) for p in self.root.glob("*/*.db"))

    def collect(self) -> Iterable[Metric]:
        with _locked(self.root, exclusive=False):
            return list(MultiProcessCollector.merge(self._files(), accumulate=True))


class DatabaseCollector(Collector):
    """Gauges computed from PostgreSQL at scrape time, so they hold for any number of workers.

    When the database cannot be reached the gauges are left out (and a warning logged) rather than
    failing the scrape: the process counters remain visible, and an alert on the missing
    `einvoice_jobs` series says what is wrong.
    """

    def __init__(self, store: Store, providers: Iterable[str]) -> None:
        self.store = store
        self.providers = sorted(providers)

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.store.stats.count_by_state()
            overdue = self.store.stats.oldest_due_seconds()
            queued = self.store.stats.oldest_in_state_seconds(JobState.QUEUED)
            links = self.store.stats.links_expiry_seconds()
            month = month_of(utcnow())
            used = DatabaseUsage(self.store.engine).by_provider(month)
            with self.store.db.session() as session:
                dead_letters = webhooks.dead_letters(session)
        except SQLAlchemyError as exc:
            log.warning("database gauges skipped: %s", type(exc).__name__)
            return
        providers = sorted(set(self.providers) | {p for p, _, _ in counts})
        jobs = GaugeMetricFamily(
            "einvoice_jobs", "Jobs by provider and state, from the database.", labels=["provider", "state"]
        )
        by_key = {(p, s): n for p, s, n in counts}
        for provider in providers:
            for state in JobState:
                jobs.add_metric([provider, state.value], by_key.get((provider, state.value), 0))
        yield jobs
        due = GaugeMetricFamily(
            "einvoice_oldest_due_seconds",
            "How late the most overdue step (submit, poll, retrieve) is; 0 when nothing is overdue.",
            labels=["provider"],
        )
        for provider in providers:
            due.add_metric([provider], overdue.get(provider, 0.0))
        yield due
        oldest = GaugeMetricFamily(
            "einvoice_oldest_queued_seconds",
            "How long the job that has waited longest in `queued` has been there; 0 when none is queued.",
            labels=["provider"],
        )
        for provider in providers:
            oldest.add_metric([provider], max(0.0, queued.get(provider, 0.0)))
        yield oldest
        if links:
            expiry = GaugeMetricFamily(
                "einvoice_links_expiry_seconds",
                "Seconds until the soonest expiry among links still due for refresh; negative once expired.",
                labels=["provider"],
            )
            for provider, seconds in sorted(links.items()):
                expiry.add_metric([provider], seconds)
            yield expiry
        yield from plan_gauges(used, monthly_limits())
        dead = GaugeMetricFamily(
            "einvoice_webhook_dead_letters",
            "Webhook deliveries given up on after about three days (`einvoice webhooks replay` sends one again).",
        )
        dead.add_metric([], dead_letters)
        yield dead


def monthly_limits() -> dict[str, int]:
    """Providers whose plan counts requests per month, and their limit (0 = none)."""
    return {"mseller": MSellerSettings.from_env().requests_per_month}


def plan_gauges(used: Mapping[str, int], limits: Mapping[str, int]) -> Iterator[Metric]:
    """Requests counted this month (UTC) and their share of the plan, for the providers with one."""
    requests = GaugeMetricFamily(
        "einvoice_provider_requests_month",
        "Provider requests counted against the plan this calendar month (UTC), from the database.",
        labels=["provider"],
    )
    share = GaugeMetricFamily(
        "einvoice_provider_plan_share",
        "Share of the plan's monthly requests used so far (1 = spent; the provider then answers 429).",
        labels=["provider"],
    )
    for provider in sorted(set(used) | set(limits)):
        requests.add_metric([provider], used.get(provider, 0))
        limit = limits.get(provider, 0)
        if limit > 0:
            share.add_metric([provider], used.get(provider, 0) / limit)
    yield requests
    yield share


def build_registry(store: Store, root: Path, providers: Iterable[str]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    root.mkdir(parents=True, exist_ok=True)
    registry.register(ProcessFilesCollector(root))
    registry.register(DatabaseCollector(store, providers))
    return registry


@dataclass(frozen=True)
class BasicAuth:
    user: str
    password: str

    def __repr__(self) -> str:
        return f"BasicAuth(user={self.user!r}, password='***')"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BasicAuth | None:
        """`METRICS_BASIC_AUTH=user:password`, or the same in the file named by `METRICS_BASIC_AUTH_FILE`."""
        raw = read_setting("METRICS_BASIC_AUTH", environ=environ)
        if not raw:
            return None
        user, sep, password = raw.partition(":")
        if not sep or not user or not password:
            raise ValueError("METRICS_BASIC_AUTH must be user:password")
        return cls(user, password)

    def allows(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        # Both comparisons always run, in constant time, so timing tells nothing about which failed.
        ok_user = hmac.compare_digest(user.encode(), self.user.encode())
        ok_password = hmac.compare_digest(password.encode(), self.password.encode())
        return ok_user and ok_password


def build_app(registry: CollectorRegistry, auth: BasicAuth | None) -> Any:
    """`/metrics` (behind basic auth when configured) and `/healthz` (for container health checks)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def metrics(request: Request) -> Response:
        if auth is not None and not auth.allows(request.headers.get("authorization")):
            return PlainTextResponse(
                "authentication required", status_code=401, headers={"WWW-Authenticate": 'Basic realm="einvoice"'}
            )
        # The database queries block; keep them off the event loop so /healthz stays responsive.
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz)])


def serve(*, database_url: str, host: str, port: int, providers: Iterable[str]) -> None:
    """Run the metrics endpoint until interrupted."""
    import uvicorn

    from models import make_engine

    root = root_dir()
    engine = make_engine(database_url, **({} if database_url.startswith("sqlite") else {"pool_size": 2}))
    registry = build_registry(Store(engine), root, providers)
    log.info("serving metrics of %s and the database on %s:%d", root, host, port)
    try:
        uvicorn.run(build_app(registry, BasicAuth.from_env()), host=host, port=port, log_level="warning")
    finally:
        engine.dispose()
