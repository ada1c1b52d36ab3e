"""Rate limits and concurrency caps of a queue: parsing and the user-facing view.

The limits are queue settings stored in the backend (like the paused flag), so every
worker of every process agrees on them, and they are enforced *inside* the backend's
claim (one Lua script on Redis, one transaction on SQLite) — never by counting in a
worker, which would let N workers run N times the limit.

* ``rate_limit="100/s"``: at most 100 claims of the queue in any sliding window of one
  second, across all workers (a sliding log: exact, no burst at window edges).
* ``max_active=5``: at most 5 jobs of the queue active at once, across all workers.
* ``group_rate_limit="10/s"``: each rate-limit group (a tenant, say: the job's
  ``rate_limit_key``) gets its own sliding window, and the claim rotates fairly
  between the groups that have ready jobs.

A handler that hears "slow down" from the service it calls raises
:class:`~shigoto.errors.RateLimited`; see :mod:`shigoto.errors`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from .backends.contract import QueueLimits
from .errors import ConfigurationError

MAX_RATE_COUNT = 100_000
"""The most claims one window may allow: the sliding log keeps one entry per claim."""
MAX_GROUP_LENGTH = 200

_UNITS_MS = {
    "ms": 1,
    "s": 1000,
    "sec": 1000,
    "second": 1000,
    "m": 60_000,
    "min": 60_000,
    "minute": 60_000,
    "h": 3_600_000,
    "hour": 3_600_000,
    "d": 86_400_000,
    "day": 86_400_000,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")

RateSpec = str | tuple[int, float | timedelta]
"""``"100/s"``, ``"600/m"``, ``"10/h"``, ``"5/10s"``, or ``(count, seconds)``."""

GroupKey = Callable[[Mapping[str, Any]], "str | None"]
"""``rate_limit_key(data)``: the job's group (a tenant id...), or None for no group."""


def parse_rate(spec: RateSpec, param: str = "rate_limit") -> tuple[int, int]:
    """``"100/s"`` → ``(100, 1000)``: (count, period in ms). Raises ConfigurationError."""
    if isinstance(spec, tuple) and len(spec) == 2:
        count, period = spec
        period_s = period.total_seconds() if isinstance(period, timedelta) else period
        if (
            isinstance(count, int)
            and not isinstance(count, bool)
            and isinstance(period_s, int | float)
        ):
            return _checked(count, round(period_s * 1000), spec, param)
    elif isinstance(spec, str):
        match = _RATE.match(spec.lower())
        if match is not None:
            unit = match.group(3)
            if unit not in _UNITS_MS and unit.endswith("s"):
                unit = unit[:-1]  # "seconds", "mins"
            if unit in _UNITS_MS:
                multiple = int(match.group(2)) if match.group(2) else 1
                return _checked(int(match.group(1)), multiple * _UNITS_MS[unit], spec, param)
    raise ConfigurationError(
        f"{param} must look like '100/s', '600/m', '10/h' or '5/10s' (jobs per period), "
        f"or a (count, seconds) tuple; got {spec!r}"
    )


def _checked(count: int, period_ms: int, spec: object, param: str) -> tuple[int, int]:
    if not 1 <= count <= MAX_RATE_COUNT:
        raise ConfigurationError(
            f"{param} {spec!r}: the count must be between 1 and {MAX_RATE_COUNT}"
        )
    if period_ms < 1:
        raise ConfigurationError(f"{param} {spec!r}: the period must be at least 1 ms")
    return count, period_ms


def format_rate(count: int | None, period_ms: int | None) -> str | None:
    """``(100, 1000)`` → ``"100/s"`` (the shortest exact form), None when unset."""
    if count is None or period_ms is None:
        return None
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if period_ms % size == 0:
            n = period_ms // size
            return f"{count}/{unit}" if n == 1 else f"{count}/{n}{unit}"
    return f"{count}/{period_ms}ms"


def build_limits(
    *,
    rate_limit: RateSpec | None = None,
    max_active: int | None = None,
    group_rate_limit: RateSpec | None = None,
) -> QueueLimits:
    """Validated limits, as the backend stores them."""
    if max_active is not None and (
        not isinstance(max_active, int) or isinstance(max_active, bool) or max_active < 1
    ):
        raise ConfigurationError(f"max_active must be an int >= 1, got {max_active!r}")
    rate = parse_rate(rate_limit) if rate_limit is not None else (None, None)
    group = (
        parse_rate(group_rate_limit, "group_rate_limit")
        if group_rate_limit is not None
        else (None, None)
    )
    return QueueLimits(
        rate_max=rate[0],
        rate_period_ms=rate[1],
        max_active=max_active,
        group_rate_max=group[0],
        group_rate_period_ms=group[1],
    )


def describe(limits: QueueLimits) -> dict[str, Any]:
    """The limits as the user wrote them (``{"rate_limit": "100/s", ...}``), for the CLI,
    the dashboard and :meth:`Queue.limits`."""
    return {
        "rate_limit": format_rate(limits.rate_max, limits.rate_period_ms),
        "max_active": limits.max_active,
        "group_rate_limit": format_rate(limits.group_rate_max, limits.group_rate_period_ms),
    }


def validate_group(group: object, source: str = "group") -> str | None:
    """A group key as stored: a non-empty string without NUL, or None (no group)."""
    if group is None:
        return None
    if isinstance(group, int) and not isinstance(group, bool):
        group = str(group)
    if not isinstance(group, str) or not group or "\0" in group or len(group) > MAX_GROUP_LENGTH:
        raise ConfigurationError(
            f"{source} must be a non-empty string of at most {MAX_GROUP_LENGTH} characters "
            f"without NUL (or an int, or None for no group); got {group!r}"
        )
    return group


def group_of(key: GroupKey, data: Mapping[str, Any], job_name: str) -> str | None:
    """Compute a job's group from its data with the handler's ``rate_limit_key``."""
    try:
        value = key(data)
    except Exception as exc:
        raise ConfigurationError(
            f"job {job_name!r}: rate_limit_key raised {type(exc).__name__}: {exc}"
        ) from exc
    return validate_group(value, f"job {job_name!r}: rate_limit_key result")
