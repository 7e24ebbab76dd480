"""The command line of a Celery worker of this service, as the demo, tests and benchmarks start it."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path


def worker_command(
    *,
    name: str,
    pool: str = "threads",
    concurrency: int = 8,
    beat_schedule: Path | None = None,
    queues: Iterable[str] | None = None,
    loglevel: str = "INFO",
) -> list[str]:
    """`celery -A worker.app worker` with this interpreter; `beat_schedule` embeds beat (`-B`).

    Mingle and gossip are off: they only exchange state between workers at start-up, which a
    worker started for one run does not need and which delays its first task.
    """
    args = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", pool, "-c", str(concurrency)]
    args += ["--loglevel", loglevel, "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
    if beat_schedule is not None:
        args += ["-B", "-s", str(beat_schedule)]
    if queues:
        args += ["-Q", ",".join(queues)]
    return args
