"""Framework errors: everything shigoto raises to *callers* derives from ShigotoError.

The exceptions a *handler* raises to steer the worker (``Retry``,
``UnrecoverableError``) live in :mod:`shigoto.retry`, apart from these, because they
are part of the job-writing API rather than failures of the framework. The one
exception here that handlers raise, :class:`RateLimited`, does not derive from
``ShigotoError`` for the same reason.
"""

from __future__ import annotations

from datetime import timedelta


class ShigotoError(Exception):
    """Root of every error the framework raises to its callers."""


class ConfigurationError(ShigotoError, ValueError):
    """An argument, URL or option is invalid. The message names the offending input."""


class PayloadError(ShigotoError, ValueError):
    """Job data cannot be stored: not a mapping, not JSON-encodable, or too large."""


class JobNotFound(ShigotoError, LookupError):
    """No job with this id exists (never enqueued, or removed by a retention policy)."""


class LeaseLost(ShigotoError):
    """The worker no longer holds the job's lease, so it may not finish or extend it.

    Raised when the lease expired and the job was recovered (and possibly taken by
    another worker), or when the job was cancelled or removed meanwhile. The worker
    logs and drops the job: whoever holds the current lease finishes it.
    """


class JobFailed(ShigotoError):
    """``wait_until_finished`` on a job that ended dead: carries the recorded error."""

    def __init__(self, job_id: str, reason: str, error_type: str | None, message: str) -> None:
        self.job_id = job_id
        self.reason = reason
        self.error_type = error_type
        self.error_message = message
        detail = f"{error_type}: {message}" if error_type else message
        super().__init__(f"job {job_id} is dead ({reason}): {detail}")


class JobCancelled(ShigotoError):
    """``wait_until_finished`` on a job that was cancelled before it finished."""


class WaitTimeout(ShigotoError, TimeoutError):
    """``wait_until_finished`` gave up before the job reached a final state."""


class BackendUnavailable(ShigotoError, ConnectionError):
    """The backend could not be reached; the message says which URL and why."""


class RateLimited(Exception):
    """Raise from a handler when the service it calls says "slow down" (HTTP 429).

    The job goes back to ``delayed`` for ``retry_after`` seconds **without counting an
    attempt**. With ``hold=True`` (the default) its rate-limit group — or the whole
    queue, for a job without a group — yields no claims for that long either, so the
    other jobs talking to the same provider wait too (BullMQ's ``rateLimit``). A job
    that keeps being rate limited is retried for as long as it takes: it never dies of
    it.
    """

    def __init__(
        self,
        retry_after: float | timedelta = 1.0,
        message: str = "rate limited by the service",
        *,
        hold: bool = True,
    ) -> None:
        seconds = (
            retry_after.total_seconds()
            if isinstance(retry_after, timedelta)
            else float(retry_after)
        )
        if not seconds >= 0:
            raise ConfigurationError(f"RateLimited retry_after must be >= 0 s, got {retry_after!r}")
        super().__init__(message)
        self.retry_after_s = seconds
        self.hold = hold
