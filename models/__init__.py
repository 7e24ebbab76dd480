"""Jobs, payloads, events and artifacts; the state machine; the store that alone writes them."""

from models.db import database_url, make_engine
from models.schema import Artifact, Base, Event, Job, Payload
from models.states import FINAL, TRANSITIONS, IllegalTransition, JobState, check_transition
from models.store import AmbiguousJob, ErrorInfo, JobNotFound, Store, TransitionInfo, utcnow

__all__ = [
    "FINAL",
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
    "Payload",
    "Store",
    "TransitionInfo",
    "check_transition",
    "database_url",
    "make_engine",
    "utcnow",
]
