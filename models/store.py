"""The store: the only code that writes job state and events, one part per concern.

- `jobs`: intake (a job with its payload and first event) and reading;
- `steps`: a step's claim and its one recording transaction (`models.steps`);
- `schedule`: the sweep's one-statement hand-out of due jobs, and payload retention;
- `pauses`: every provider's breaker, shared by all processes;
- `stats`: read-only figures for gauges and for the polling schedule.

Tasks receive the parts they need; `Store` only builds them on one engine and one clock.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from models.database import Clock, Database, TransitionObserver, utcnow
from models.jobs import Jobs
from models.pauses import Pauses
from models.schedule import Schedule
from models.stats import Stats
from models.steps import Steps


class Store:
    def __init__(self, engine: Engine, clock: Clock = utcnow) -> None:
        self.db = Database(engine, clock)
        self.engine = engine
        self.jobs = Jobs(self.db)
        self.pauses = Pauses(self.db)
        self.steps = Steps(self.db, self.pauses)
        self.schedule = Schedule(self.db)
        self.stats = Stats(self.db)

    @property
    def observers(self) -> list[TransitionObserver]:
        """Called after every committed transition (metrics; they never see a rolled-back one)."""
        return self.db.observers
