"""shigoto (仕事): background jobs for Python."""

from .app import App
from .batches import Batch, BatchContext
from .clock import FrozenClock, SystemClock
from .context import JobCancelledError, JobContext, SyncJobContext
from .errors import (
    ConfigurationError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    LeaseLost,
    PayloadError,
    RateLimited,
    ShigotoError,
    WaitTimeout,
)
from .events import Event, EventType
from .handler import JobHandler
from .job import DeadReason, Job, JobOptions, JobRecord, JobState
from .queue import Queue
from .retry import Backoff, Retry, UnrecoverableError
from .schedule import Misfire, Schedule
from .scheduler import Scheduler
from .worker import Worker, WorkerSettings

__all__ = [
    "App",
    "Backoff",
    "Batch",
    "BatchContext",
    "ConfigurationError",
    "DeadReason",
    "Event",
    "EventType",
    "FrozenClock",
    "Job",
    "JobCancelled",
    "JobCancelledError",
    "JobContext",
    "JobFailed",
    "JobHandler",
    "JobNotFound",
    "JobOptions",
    "JobRecord",
    "JobState",
    "LeaseLost",
    "Misfire",
    "PayloadError",
    "Queue",
    "RateLimited",
    "Retry",
    "Schedule",
    "Scheduler",
    "ShigotoError",
    "SyncJobContext",
    "SystemClock",
    "UnrecoverableError",
    "WaitTimeout",
    "Worker",
    "WorkerSettings",
]

__version__ = "0.1.0"
