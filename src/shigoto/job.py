"""Plain data about jobs: states, options, records, and the reasons a job ends.

Everything here is a msgspec Struct or an enum, so it is cheap to encode, identical on
every backend, and carries no behaviour beyond validation.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import random
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic

import msgspec

from .clock import Seconds, seconds_of
from .errors import ConfigurationError, JobCancelled, JobFailed, JobNotFound, WaitTimeout
from .retry import Backoff

MAX_PRIORITY = 2**31 - 1
MIN_PRIORITY = -(2**31)
MAX_JOB_ID_LENGTH = 256


class JobState(enum.StrEnum):
    """Where a job is in its lifecycle (see DESIGN.md, "Job lifecycle")."""

    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED})


class DeadReason(enum.StrEnum):
    """Why a job ended in the dead-letter state; recorded on the job."""

    RETRIES_EXHAUSTED = "retries_exhausted"
    UNRECOVERABLE = "unrecoverable"
    SHOULD_RETRY_DECLINED = "should_retry_declined"
    STALLED_TOO_OFTEN = "stalled_too_often"
    NO_HANDLER = "no_handler"
    TIMEOUT = "timeout"
    BAD_PAYLOAD = "bad_payload"
    DECRYPTION_FAILED = "decryption_failed"
    """An encrypted field could not be decrypted (no key, unknown key, tampered)."""
    CRASHED = "crashed"
    """The last attempt's process died (``isolation="process"``: signal or exit code in
    the error message, e.g. ``crashed: signal 11 (SIGSEGV)``)."""


class Retention(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How many finished jobs of one kind (completed, or dead) a queue keeps.

    ``count=None, age_s=None`` keeps everything; ``count=0`` removes each job as it
    finishes; otherwise the newest ``count`` and/or those younger than ``age_s`` stay.
    """

    count: int | None = None
    age_s: float | None = None

    @property
    def keeps_all(self) -> bool:
        return self.count is None and self.age_s is None

    @property
    def removes_immediately(self) -> bool:
        return self.count == 0


KEEP_ALL = Retention()
REMOVE_ALL = Retention(count=0)

RetentionSpec = bool | int | timedelta | dict[str, Any] | Retention
"""``True`` (remove at once), ``False`` (keep all), an int (keep the newest N), a
``timedelta`` (keep for that long), or ``{"count": N, "age": seconds}``."""


def retention(value: RetentionSpec, param: str) -> Retention:
    """Normalise the public forms of ``remove_on_complete`` / ``remove_on_fail``."""
    if isinstance(value, Retention):
        return value
    if value is True:
        return REMOVE_ALL
    if value is False:
        return KEEP_ALL
    if isinstance(value, int):
        if value < 0:
            raise ConfigurationError(f"{param} must be >= 0 jobs to keep, got {value}")
        return Retention(count=value)
    if isinstance(value, timedelta):
        return Retention(age_s=_positive_seconds(value, param))
    if isinstance(value, dict):
        unknown = set(value) - {"count", "age"}
        if unknown:
            raise ConfigurationError(f"{param} accepts keys 'count' and 'age', not {unknown}")
        count = value.get("count")
        age = value.get("age")
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ConfigurationError(f"{param}['count'] must be an int >= 0, got {count!r}")
        return Retention(count=count, age_s=None if age is None else _positive_seconds(age, param))
    raise ConfigurationError(
        f"{param} must be a bool, an int (jobs to keep), a timedelta (max age) or "
        f"{{'count': N, 'age': seconds}}; got {value!r}"
    )


def _positive_seconds(value: Seconds, param: str) -> float:
    try:
        seconds = seconds_of(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{param} must be seconds or a timedelta, got {value!r}") from None
    if seconds <= 0:
        raise ConfigurationError(f"{param} must be > 0 seconds, got {seconds}")
    return seconds


class JobOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Options stored with each job, so every worker treats it the same way.

    ``should_retry`` is code, not data, so it lives on the handler, not here.
    """

    attempts: int = 3
    backoff: Backoff = Backoff()
    timeout_s: float | None = None
    priority: int = 0
    remove_on_complete: Retention = KEEP_ALL
    remove_on_fail: Retention = KEEP_ALL
    max_stalls: int = 1
    actor: str | None = None
    """Who enqueued the job (``with app.actor(...)``, else ``user@host``); the handler
    reads it as ``ctx.actor`` to check permissions at run time (shigoto.security)."""
    traceparent: str | None = None
    """W3C trace context of the enqueue, set by :mod:`shigoto.telemetry` when tracing is
    on; each execution attempt continues that trace. Reserved: not job data."""
    tracestate: str | None = None


OPTION_NAMES = frozenset(
    {
        "attempts",
        "backoff",
        "timeout",
        "priority",
        "remove_on_complete",
        "remove_on_fail",
        "max_stalls",
    }
)


def option_overrides(**given: Any) -> dict[str, Any]:
    """Validate user-facing options and return them as ``JobOptions`` field overrides.

    Only options actually passed (not ``None``) appear in the result, so layers
    (queue defaults < handler defaults < enqueue call) merge by dict update.
    """
    out: dict[str, Any] = {}
    unknown = set(given) - OPTION_NAMES
    if unknown:
        raise ConfigurationError(
            f"unknown job option(s) {sorted(unknown)}; expected some of {sorted(OPTION_NAMES)}"
        )
    if (attempts := given.get("attempts")) is not None:
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ConfigurationError(f"attempts must be an int >= 1, got {attempts!r}")
        out["attempts"] = attempts
    if (backoff := given.get("backoff")) is not None:
        if isinstance(backoff, int | float | timedelta) and not isinstance(backoff, bool):
            backoff = Backoff.fixed(backoff)
        if not isinstance(backoff, Backoff):
            raise ConfigurationError(
                "backoff must be Backoff.fixed(...), Backoff.exponential(...) or seconds; "
                f"got {backoff!r}"
            )
        out["backoff"] = backoff
    if (timeout := given.get("timeout")) is not None:
        out["timeout_s"] = _positive_seconds(timeout, "timeout")
    if (priority := given.get("priority")) is not None:
        if (
            not isinstance(priority, int)
            or isinstance(priority, bool)
            or not (MIN_PRIORITY <= priority <= MAX_PRIORITY)
        ):
            raise ConfigurationError(
                f"priority must be an int between {MIN_PRIORITY} and {MAX_PRIORITY}, "
                f"got {priority!r}"
            )
        out["priority"] = priority
    for name in ("remove_on_complete", "remove_on_fail"):
        if (value := given.get(name)) is not None:
            out[name] = retention(value, name)
    if (max_stalls := given.get("max_stalls")) is not None:
        if not isinstance(max_stalls, int) or isinstance(max_stalls, bool) or max_stalls < 0:
            raise ConfigurationError(f"max_stalls must be an int >= 0, got {max_stalls!r}")
        out["max_stalls"] = max_stalls
    return out


def validate_delay(delay: Seconds | None) -> float:
    """A start delay in seconds (>= 0)."""
    if delay is None:
        return 0.0
    if isinstance(delay, bool) or not isinstance(delay, int | float | timedelta):
        raise ConfigurationError(f"delay must be seconds or a timedelta, got {delay!r}")
    seconds = seconds_of(delay)
    if seconds < 0:
        raise ConfigurationError(f"delay must be >= 0 seconds, got {seconds}")
    return seconds


def new_job_id() -> str:
    """96 random bits as hex: unique without coordination, safe in URLs and keys.

    Drawn from the ``random`` module's global generator (seeded from the OS, and
    re-seeded in every forked child, so processes never share a sequence): ids need
    uniqueness, not secrecy, and a syscall per id cost 6 µs of a bulk enqueue.
    """
    return f"{random.getrandbits(96):024x}"


def validate_job_id(job_id: str | None) -> str | None:
    if job_id is None:
        return None
    if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_JOB_ID_LENGTH:
        raise ConfigurationError(
            f"job_id must be a non-empty string of at most {MAX_JOB_ID_LENGTH} characters, "
            f"got {job_id!r}"
        )
    return job_id


class AttemptError(msgspec.Struct, frozen=True):
    """One failed (or interrupted) attempt, kept on the job for operators."""

    attempt: int
    error_type: str
    message: str
    traceback: str
    worker_id: str
    started_ms: int | None
    ended_ms: int


class JobRecord(msgspec.Struct, frozen=True):
    """A job as stored: what ``get`` returns and what a worker receives on ``claim``.

    ``payload``, ``result`` and ``progress`` are JSON bytes, decoded on demand.
    """

    id: str
    queue: str
    name: str
    payload: bytes
    options: JobOptions
    state: JobState
    priority: int
    created_ms: int
    ready_ms: int
    attempts: int = 0
    stalls: int = 0
    started_ms: int | None = None
    finished_ms: int | None = None
    worker_id: str | None = None
    lease_until_ms: int | None = None
    progress: bytes | None = None
    result: bytes | None = None
    errors: list[AttemptError] = msgspec.field(default_factory=list)
    reason: str | None = None
    cancel_requested: bool = False
    group: str | None = None
    """The job's rate-limit group (from ``rate_limit_key``, or ``group=`` at enqueue)."""

    @property
    def data(self) -> dict[str, Any]:
        decoded: dict[str, Any] = msgspec.json.decode(self.payload)
        return decoded

    @property
    def result_value(self) -> Any:
        return None if self.result is None else msgspec.json.decode(self.result)

    @property
    def progress_value(self) -> Any:
        return None if self.progress is None else msgspec.json.decode(self.progress)

    @property
    def last_error(self) -> AttemptError | None:
        return self.errors[-1] if self.errors else None

    @property
    def duration_ms(self) -> int | None:
        if self.started_ms is None or self.finished_ms is None:
            return None
        return self.finished_ms - self.started_ms


# -- the handle users hold ------------------------------------------------------------

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    from .queue import Queue

    R = TypeVar("R", default=Any)
    """The handler's result type; ``Job`` alone is ``Job[Any]``."""
else:  # type-parameter defaults (PEP 696) exist for type checkers only before 3.13
    from typing import TypeVar

    R = TypeVar("R")

_TERMINAL_POLL_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


class Job(Generic[R]):
    """A handle on one stored job: returned by ``add`` / ``enqueue`` / ``get_job``.

    ``handler.enqueue(...)`` returns a ``Job[R]`` where ``R`` is the handler's return
    type, so ``wait_until_finished`` is typed; ``queue.add`` returns ``Job[Any]``.

    ``record`` is the last state read from the backend; :meth:`refresh` reads again.
    ``created`` is False when ``add`` found an existing job with the same id.
    """

    __slots__ = ("created", "id", "queue", "record")

    def __init__(
        self, queue: Queue, job_id: str, *, created: bool = True, record: JobRecord | None = None
    ) -> None:
        self.queue = queue
        self.id = job_id
        self.created = created
        self.record = record

    def __repr__(self) -> str:
        state = self.record.state.value if self.record else "?"
        return f"<Job {self.queue.name}/{self.id} {state}>"

    async def refresh(self) -> JobRecord:
        """Read the job again. Raises ``JobNotFound`` if it was removed."""
        record = await self.queue._get_record(self.id)
        if record is None:
            raise JobNotFound(
                f"job {self.id} is not in queue {self.queue.name!r} (never added, or removed "
                "by remove_on_complete / remove_on_fail)"
            )
        self.record = record
        return record

    async def state(self) -> JobState:
        return (await self.refresh()).state

    async def progress(self) -> Any:
        return (await self.refresh()).progress_value

    async def cancel(self) -> JobState | None:
        """Cancel if waiting or delayed; an active job is flagged (``ctx.cancelled``)."""
        return await self.queue.cancel(self.id)

    async def wait_until_finished(self, timeout: Seconds | None = None) -> R:
        """Wait for a final state; return the result, or raise why it did not complete.

        Raises ``JobFailed`` (dead, with the last recorded error), ``JobCancelled``, or
        ``WaitTimeout`` after ``timeout`` seconds (the job itself is left alone).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + seconds_of(timeout)
        for step in itertools.count():
            record = await self.refresh()
            if record.state is JobState.COMPLETED:
                handler = self.queue.app.handlers.get(record.name)
                value = record.result_value
                result: R = value if handler is None else handler.decode_result(value)
                return result
            if record.state is JobState.DEAD:
                last = record.last_error
                raise JobFailed(
                    self.id,
                    record.reason or "dead",
                    last.error_type if last else None,
                    last.message if last else "no error recorded",
                )
            if record.state is JobState.CANCELLED:
                raise JobCancelled(f"job {self.id} was cancelled")
            pause = _TERMINAL_POLL_S[min(step, len(_TERMINAL_POLL_S) - 1)]
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise WaitTimeout(f"job {self.id} still {record.state.value} after {timeout} s")
                pause = min(pause, left)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    # -- blocking twins (one portal; see shigoto.portal) --------------------------------

    def refresh_sync(self) -> JobRecord:
        return self.queue.app.portal.call(self.refresh)

    def wait_until_finished_sync(self, timeout: Seconds | None = None) -> R:
        return self.queue.app.portal.call(self.wait_until_finished, timeout)
