"""Retry decisions: pure functions, no I/O.

Whether and when a failed attempt runs again is decided here, once, for every backend;
a backend only performs "move to delayed until T" or "move to dead". Handlers steer
the decision by raising :class:`Retry` (run again after a delay) or
:class:`UnrecoverableError` (never retry: a business error).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from .clock import Seconds, seconds_of
from .errors import ConfigurationError


class UnrecoverableError(Exception):
    """Raise from a handler when retrying cannot help (invalid input, business rule).

    The job goes straight to the dead-letter state, whatever attempts remain.
    """


class Retry(Exception):
    """Raise from a handler to ask for another attempt, optionally after ``delay`` seconds.

    Counts as a failed attempt: when no attempts remain the job goes dead.
    """

    def __init__(self, delay: Seconds | None = None, message: str = "retry requested") -> None:
        super().__init__(message)
        self.delay_s = None if delay is None else seconds_of(delay)


class Backoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How long to wait before attempt *n + 1* after attempt *n* failed.

    Build one with :meth:`fixed` or :meth:`exponential`; it is plain data, stored with
    each job, so every worker computes the same schedule.
    """

    kind: Literal["fixed", "exponential"] = "exponential"
    delay_s: float = 2.0
    max_delay_s: float | None = 60.0
    jitter: float = 0.0

    @classmethod
    def fixed(cls, delay: Seconds, *, jitter: float = 0.0) -> Backoff:
        """The same wait after every failure."""
        return cls._checked("fixed", delay, None, jitter)

    @classmethod
    def exponential(
        cls, delay: Seconds = 2.0, *, max_delay: Seconds | None = 60.0, jitter: float = 0.0
    ) -> Backoff:
        """``delay * 2**(n-1)`` after the n-th failure, capped at ``max_delay``.

        ``jitter`` (0..1) draws each wait uniformly from ``[wait * (1 - jitter), wait]``
        so that jobs failing together do not all come back at the same instant.
        """
        return cls._checked("exponential", delay, max_delay, jitter)

    @classmethod
    def _checked(
        cls,
        kind: Literal["fixed", "exponential"],
        delay: Seconds,
        max_delay: Seconds | None,
        jitter: float,
    ) -> Backoff:
        delay_s = seconds_of(delay)
        if delay_s < 0:
            raise ConfigurationError(f"Backoff delay must be >= 0 seconds, got {delay_s}")
        max_s = None if max_delay is None else seconds_of(max_delay)
        if max_s is not None and max_s < delay_s:
            raise ConfigurationError(f"Backoff max_delay ({max_s}) must be >= delay ({delay_s})")
        if not 0.0 <= jitter <= 1.0:
            raise ConfigurationError(f"Backoff jitter must be between 0 and 1, got {jitter}")
        return cls(kind=kind, delay_s=delay_s, max_delay_s=max_s, jitter=float(jitter))

    def delay_after(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based)."""
        growth = 1.0 if self.kind == "fixed" else 2.0 ** max(0, failures - 1)
        wait = self.delay_s * growth
        if self.max_delay_s is not None:
            wait = min(wait, self.max_delay_s)
        if self.jitter:
            wait *= 1.0 - self.jitter * rand()
        return wait


ShouldRetry = Callable[[BaseException, int], "bool | None"]
"""``should_retry(error, attempts_made)``: True retries, False goes dead, None defers to
the ``attempts`` limit. Its answer wins over ``attempts`` when it is a bool, so
"connection refused: retry up to 10 times" can be written as ``attempts_made < 10``."""


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Decision: run again after ``delay_s`` seconds."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Decision: the job is dead, for ``reason`` (one of the reasons in :mod:`.job`)."""

    reason: str


def decide(
    error: BaseException,
    attempts_made: int,
    max_attempts: int,
    backoff: Backoff,
    should_retry: ShouldRetry | None = None,
) -> RetryAt | GiveUp:
    """What to do after attempt number ``attempts_made`` failed with ``error``."""
    if isinstance(error, UnrecoverableError):
        return GiveUp("unrecoverable")
    verdict: bool | None = None
    if should_retry is not None:
        verdict = should_retry(error, attempts_made)
    if verdict is False:
        return GiveUp("should_retry_declined")
    if verdict is None and attempts_made >= max_attempts:
        return GiveUp("retries_exhausted")
    if isinstance(error, Retry) and error.delay_s is not None:
        return RetryAt(error.delay_s)
    return RetryAt(backoff.delay_after(attempts_made))
