"""Jobs, payloads, events and artifacts; the state machines; the store that alone writes them.

The CFDI index and download packages live in `models.cfdi`, imported here so that every table is
on `Base.metadata` whichever module is imported first.
"""

from models import cfdi as cfdi
from models.database import TransitionInfo, utcnow
from models.db import database_url, make_engine
from models.jobs import AmbiguousJob, ChildJob, JobNotFound
from models.pauses import AUTH_PAUSE, CLOSED, OUTAGE_PAUSE, BreakerPolicy, Health, PauseInfo
from models.schema import Artifact, Base, Event, Job, Payload, ProviderPause
from models.states import (
    FINAL,
    MACHINES,
    TRANSITIONS,
    AddendaState,
    DownloadState,
    IllegalTransition,
    JobState,
    Machine,
    check_transition,
)
from models.steps import POLL_EVENT, ArtifactRecord, Change, Claimed, ErrorInfo, Note, Step
from models.store import Store
from models.usage import DatabaseUsage, ProviderUsage

__all__ = [
    "AUTH_PAUSE",
    "CLOSED",
    "FINAL",
    "MACHINES",
    "OUTAGE_PAUSE",
    "POLL_EVENT",
    "TRANSITIONS",
    "AddendaState",
    "AmbiguousJob",
    "Artifact",
    "ArtifactRecord",
    "Base",
    "BreakerPolicy",
    "Change",
    "ChildJob",
    "Claimed",
    "DatabaseUsage",
    "DownloadState",
    "ErrorInfo",
    "Event",
    "Health",
    "IllegalTransition",
    "Job",
    "JobNotFound",
    "JobState",
    "Machine",
    "Note",
    "PauseInfo",
    "Payload",
    "ProviderPause",
    "ProviderUsage",
    "Step",
    "Store",
    "TransitionInfo",
    "check_transition",
    "database_url",
    "make_engine",
    "utcnow",
]
