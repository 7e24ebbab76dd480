"""Jobs, payloads, events and artifacts; the state machine; the store that alone writes them.

The CFDI index and download packages live in `models.cfdi`, imported here so that every table is
on `Base.metadata` whichever module is imported first.
"""

from models import cfdi as cfdi
from models.db import database_url, make_engine
from models.schema import Artifact, Base, Event, Job, Payload, ProviderPause
from models.states import FINAL, TRANSITIONS, IllegalTransition, JobState, check_transition
from models.store import (
    AUTH_PAUSE,
    OUTAGE_PAUSE,
    AmbiguousJob,
    ErrorInfo,
    JobNotFound,
    PauseInfo,
    Step,
    Store,
    TransitionInfo,
    utcnow,
)

__all__ = [
    "AUTH_PAUSE",
    "FINAL",
    "OUTAGE_PAUSE",
    "TRANSITIONS",
    "AmbiguousJob",
    "Artifact",
    "Base",
    "ErrorInfo",
    "Event",
    "IllegalTransition",
    "Job",
    "JobNotFound",
    "JobState",
    "PauseInfo",
    "Payload",
    "ProviderPause",
    "Step",
    "Store",
    "TransitionInfo",
    "check_transition",
    "database_url",
    "make_engine",
    "utcnow",
]
