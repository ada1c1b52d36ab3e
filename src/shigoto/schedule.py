"""What a schedule is: its definition, validation, and which ticks are due when.

Pure and backend-free: tick times are a function of the schedule alone (its trigger,
from :mod:`shigoto.triggers`), so every scheduler process computes the same ticks and
the same deterministic job id per tick. :mod:`shigoto.scheduler` turns due ticks into
jobs exactly once through the backend.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar

import msgspec

from .clock import Seconds, seconds_of, to_ms
from .errors import ConfigurationError
from .triggers import IntervalTrigger, Trigger, cron_trigger, zone

F = TypeVar("F", bound=Callable[..., Any])

TICK_PREFIX = "cron:"
"""Job ids starting with this are reserved for scheduled ticks."""
MAX_NAME_LENGTH = 200
DEFAULT_GRACE_S = 60.0
DEFAULT_MISFIRE_LIMIT = 100
MAX_DUE_PER_TICK = 1000
"""Most ticks of one schedule fired in one pass (bounds a run_all catch-up)."""


class Misfire(enum.StrEnum):
    """What happens to ticks missed while every scheduler was down."""

    SKIP = "skip"
    RUN_ONCE = "run_once"
    RUN_ALL = "run_all"


class Schedule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One schedule: when (``cron`` + ``tz``, or ``every_ms``), what (job, queue, data),
    and what to do with missed ticks. Plain data: run-time schedules are stored in the
    backend in exactly this form (JSON)."""

    name: str
    job: str
    queue: str
    cron: str | None = None
    tz: str = "UTC"
    every_ms: int | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    misfire: Misfire = Misfire.SKIP
    misfire_limit: int = DEFAULT_MISFIRE_LIMIT
    misfire_grace_ms: int = to_ms(DEFAULT_GRACE_S)

    @property
    def trigger(self) -> Trigger:
        if self.cron is not None:
            return cron_trigger(self.cron, self.tz)
        assert self.every_ms is not None
        return IntervalTrigger(self.every_ms)

    @property
    def when(self) -> str:
        """``0 9 * * *`` or ``every 5m``."""
        return self.trigger.describe()

    def next_fires(self, after_ms: int, count: int = 3) -> list[int]:
        """The next ``count`` fire times after ``after_ms``."""
        out: list[int] = []
        at: int | None = after_ms
        while len(out) < count and at is not None:
            at = self.trigger.next_after(at)
            if at is not None:
                out.append(at)
        return out


schedule_decoder = msgspec.json.Decoder(Schedule)


def define_schedule(
    *,
    name: str | None,
    job: str,
    queue: str,
    cron: str | None = None,
    tz: str | tzinfo | None = None,
    every: Seconds | None = None,
    data: Mapping[str, Any] | None = None,
    misfire: Misfire | str = Misfire.SKIP,
    misfire_limit: int = DEFAULT_MISFIRE_LIMIT,
    misfire_grace: Seconds = DEFAULT_GRACE_S,
) -> Schedule:
    """Validate everything now and build a :class:`Schedule`; errors name the schedule
    and its expression. ``name=None`` validates a decorator's settings before the
    function (and so the default name) is known."""
    if name is not None and (not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH):
        raise ConfigurationError(
            f"schedule name must be 1-{MAX_NAME_LENGTH} characters, got {name!r}"
        )
    when = f"cron {cron!r}" if cron is not None else f"every {every!r}"
    what = f"schedule {name!r} ({when})" if name else when
    if (cron is None) == (every is None):
        raise ConfigurationError(f"{what}: give exactly one of cron= or every=")
    try:
        kind = Misfire(misfire)
    except ValueError:
        raise ConfigurationError(
            f"{what}: misfire must be one of {', '.join(m.value for m in Misfire)}, got {misfire!r}"
        ) from None
    if isinstance(misfire_limit, bool) or not isinstance(misfire_limit, int):
        raise ConfigurationError(f"{what}: misfire_limit must be an int, got {misfire_limit!r}")
    if not 1 <= misfire_limit <= MAX_DUE_PER_TICK:
        raise ConfigurationError(
            f"{what}: misfire_limit must be between 1 and {MAX_DUE_PER_TICK}, got {misfire_limit}"
        )
    grace_ms = _duration_ms(misfire_grace, f"{what}: misfire_grace")
    if data is not None and not isinstance(data, Mapping):
        raise ConfigurationError(f"{what}: data must be a mapping, got {type(data).__name__}")
    try:
        payload = dict(data or {})
        msgspec.json.encode(payload)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{what}: data is not JSON-encodable: {exc}") from None
    try:
        tz_name = zone(tz).key
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
    every_ms = None
    if cron is not None:
        try:
            cron = cron_trigger(cron, tz_name).expr
        except ConfigurationError as exc:  # its message names the expression
            raise ConfigurationError(f"schedule {name!r}: {exc}" if name else str(exc)) from None
    else:
        assert every is not None
        if tz is not None and tz_name != "UTC":
            raise ConfigurationError(
                f"{what}: tz= applies to cron schedules; every= counts real time (use "
                "cron= for 'every day at 09:00 local time')"
            )
        every_ms = _duration_ms(every, f"{what}: every")
        IntervalTrigger(every_ms)  # raises when too short
    return Schedule(
        name=name or "",
        job=job,
        queue=queue,
        cron=cron,
        tz=tz_name,
        every_ms=every_ms,
        data=payload,
        misfire=kind,
        misfire_limit=misfire_limit,
        misfire_grace_ms=grace_ms,
    )


def _duration_ms(value: Seconds, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise ConfigurationError(f"{what} must be seconds or a timedelta, got {value!r}")
    if seconds_of(value) <= 0:
        raise ConfigurationError(f"{what} must be > 0, got {value!r}")
    return to_ms(value)


# -- which ticks are due ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Due:
    """The ticks of one schedule to fire now, oldest first, and what was left out."""

    fire: list[int]
    dropped_before_ms: int | None = None
    """Set when missed ticks were dropped by the policy: the newest one dropped."""


def due_ticks(schedule: Schedule, *, after_ms: int, now_ms: int) -> Due:
    """Ticks in ``(after_ms, now_ms]`` to fire under the schedule's misfire policy.

    Pure: walks back from ``now_ms`` (so a schedule idle for a year costs no more than
    one idle for a minute) and stops as soon as the policy needs nothing older.
    """
    trigger = schedule.trigger
    on_time: list[int] = []
    missed: list[int] = []
    dropped: int | None = None
    want_missed = {
        Misfire.SKIP: 0,
        Misfire.RUN_ONCE: 1,
        Misfire.RUN_ALL: schedule.misfire_limit,
    }[schedule.misfire]
    fire = trigger.latest_at_or_before(now_ms)
    while fire is not None and fire > after_ms:
        if now_ms - fire <= schedule.misfire_grace_ms:
            if len(on_time) >= MAX_DUE_PER_TICK:
                dropped = fire
                break
            on_time.append(fire)
        elif len(missed) < want_missed:
            missed.append(fire)
        else:
            dropped = fire
            break
        fire = trigger.latest_at_or_before(fire - 1)
    return Due(sorted(missed + on_time), dropped)


def tick_job_id(schedule: str, fire_ms: int) -> str:
    """The deterministic id of a tick's job."""
    return f"{TICK_PREFIX}{schedule}:{fire_ms}"


def scheduled_at(job_id: str) -> datetime | None:
    """The tick a scheduled job belongs to (UTC), from its id; None for other jobs."""
    if not job_id.startswith(TICK_PREFIX):
        return None
    _, _, tail = job_id.rpartition(":")
    if not tail.isdigit():
        return None
    return datetime.fromtimestamp(int(tail) / 1000, UTC)
