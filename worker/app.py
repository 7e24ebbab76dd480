"""The Celery app: `celery -A worker.app worker|beat|flower`.

Two queues: `submit` carries uploads of up to 40 MB, `poll` carries verify, retrieve and link
refreshes, so a large upload never starves polling. A worker started without `-Q` consumes both.
No result backend: the state of every job is in the database.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_init, worker_process_init, worker_process_shutdown
from kombu.entity import Queue

from providers.base import add_request_observer
from tasks.context import store_setup
from worker import metrics
from worker.budget import use_database_budget
from worker.settings import Settings

settings = Settings.from_env()

# Plans counted per month (MSeller) are counted in the database, shared by every process.
use_database_budget(settings.database_url)

# Every store this process creates reports its transitions, and every provider request is counted;
# the metrics themselves are created on first use, once the process knows its metrics directory.
store_setup.append(metrics.instrument)
add_request_observer(metrics.observe_request)


def _transport_options(s: Settings) -> dict[str, Any]:
    if s.embedded:
        folder = s.broker_folder / "queue"
        processed = s.broker_folder / "processed"
        folder.mkdir(parents=True, exist_ok=True)
        processed.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(processed),
            "control_folder": str(s.broker_folder / "control"),
            "store_processed": False,
        }
    # No ack emulation: the database sweep, not Redis, brings back the work of a dead worker (after
    # its lease), so Redis's unacked bookkeeping only adds visibility-timeout redeliveries. It also
    # crashed the worker when Redis went away: on connection loss kombu 5.7 restores unacked
    # messages through a connection it has already dropped (AttributeError, not a connection
    # error), and the worker exits with "Unrecoverable error" instead of reconnecting.
    return {"ack_emulation": False}


app = Celery("einvoice", broker=settings.broker_url, include=["tasks.pipeline", "tasks.webhooks"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_queues=(Queue("submit"), Queue("poll")),
    task_default_queue="poll",
    task_routes={"einvoice.submit": {"queue": "submit"}},
    broker_transport_options=_transport_options(settings),
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    worker_hijack_root_logger=False,
    beat_schedule={
        "sweep": {
            "task": "einvoice.sweep",
            "schedule": settings.policy.sweep_interval_seconds,
            "options": {"queue": "poll", "expires": settings.policy.sweep_interval_seconds * 2},
        },
        "purge-payloads": {
            "task": "einvoice.purge_payloads",
            "schedule": 3600.0,
            "options": {"queue": "poll", "expires": 1800.0},
        },
    },
    einvoice_policy=settings.policy.to_mapping(),
)


@worker_init.connect
def _metrics_dir(sender: Any = None, **_: Any) -> None:
    """In the parent, before the pool forks: a fresh metrics directory for this worker node."""
    metrics.start_worker_node(getattr(sender, "hostname", None) or f"pid{os.getpid()}")


@worker_process_shutdown.connect
def _metrics_child_gone(pid: int | None = None, **_: Any) -> None:
    metrics.mark_dead(pid or os.getpid())


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked child must not reuse its parent's database or HTTP sockets."""
    from providers import reset_providers
    from tasks.context import reset

    reset()
    reset_providers()


@setup_logging.connect
def _logging(loglevel: Any = None, **_: Any) -> None:
    level = loglevel if isinstance(loglevel, int) else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s")
    # Request-level libraries would log URLs (which carry download tokens) and bodies at DEBUG.
    for noisy in ("httpx", "httpcore", "zeep", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
