"""When a schedule fires: cron expressions in a time zone, and fixed intervals.

A trigger turns "now" into fire times, as integer epoch milliseconds, and nothing else:
no I/O, no clock, so every rule here is tested with plain numbers. Parsing and
matching of cron expressions is croniter's (a maintained library); this module adds
validation with clear errors, the 6-field (seconds first) form, and the daylight
saving time rule below.

Daylight saving time (what a schedule in a zone with DST does):

* **Clocks go forward** (a local hour does not exist, e.g. 02:00-02:59 on the
  spring-forward day in ``America/New_York``): a fire time inside the missing hour runs
  **once, at the first instant after the gap** (``0 2 * * *`` runs at 03:00 EDT that
  day). It is neither skipped nor doubled.
* **Clocks go back** (a local hour happens twice, e.g. 01:00-01:59 on the fall-back
  day): a schedule with a fixed hour (``30 1 * * *``, ``@daily``) runs **once, at the
  first occurrence** of its wall-clock time. A schedule whose hour field is ``*`` or
  ``*/N`` (``@hourly``, ``*/15 * * * *``, every second...) keeps its real-time cadence
  and also runs in the repeated hour, because skipping a whole hour of an "every 15
  minutes" job would be a gap. ``0 2 * * *`` is untouched on the fall-back day: 02:00
  happens once (01:59 EDT is followed by 01:00 EST).

This is the behaviour of Debian's cron. Interval schedules (``every``) are counted in
real time from the Unix epoch and never see DST.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from .errors import ConfigurationError

MIN_INTERVAL_MS = 1000
"""Shortest interval and cron resolution: one second."""
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MAX_REPEATED = 3601
"""Fires in a row the DST rule may drop: a repeated hour holds at most 3600 one-second
fires."""


class Trigger(Protocol):
    """Fire times of one schedule, as epoch milliseconds."""

    def next_after(self, ms: int) -> int | None:
        """The first fire strictly after ``ms`` (None: it never fires again)."""
        ...

    def latest_at_or_before(self, ms: int) -> int | None:
        """The last fire at or before ``ms`` (None: none that late)."""
        ...

    def describe(self) -> str:
        """A short human description for logs and ``shigoto schedules``."""
        ...


def zone(tz: str | tzinfo | None) -> ZoneInfo:
    """A ``ZoneInfo`` from an IANA name (``"Asia/Tokyo"``) or a ``ZoneInfo``.

    Fixed-offset ``tzinfo`` objects are refused: they cannot follow a zone's DST rules,
    and a schedule defined with one would silently drift by an hour twice a year.
    """
    if tz is None:
        return ZoneInfo("UTC")
    if isinstance(tz, ZoneInfo):
        return tz
    if tz is UTC:
        return ZoneInfo("UTC")
    if not isinstance(tz, str) or not tz:
        raise ConfigurationError(
            f"tz must be an IANA time zone name such as 'Asia/Tokyo' or a ZoneInfo, got {tz!r}"
        )
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"unknown time zone {tz!r} (use an IANA name such as 'Asia/Tokyo', "
            "'America/New_York' or 'UTC'; pip install tzdata if the system has none)"
        ) from None


def _to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


class CronTrigger:
    """A cron expression evaluated in a time zone.

    Accepts 5 fields (minute hour day-of-month month day-of-week), 6 fields with
    seconds first (``*/10 * * * * *``: every 10 seconds, as in BullMQ, Quartz and
    node-cron), and the aliases ``@yearly @annually @monthly @weekly @daily @midnight
    @hourly``. Day-of-month and day-of-week combine with OR when both are restricted,
    as in every cron.
    """

    def __init__(self, expr: str, tz: str | tzinfo | None = None) -> None:
        if not isinstance(expr, str) or not expr.strip():
            raise ConfigurationError(f"cron expression must be a non-empty string, got {expr!r}")
        self.expr = " ".join(expr.split())
        self.tz = zone(tz)
        expanded = ALIASES.get(self.expr.lower(), self.expr)
        if expanded.startswith("@"):
            raise ConfigurationError(
                f"cron expression {expr!r}: unknown alias; known: {', '.join(ALIASES)}"
            )
        fields = expanded.split()
        if len(fields) not in (5, 6):
            raise ConfigurationError(
                f"cron expression {expr!r} has {len(fields)} fields; expected 5 (minute hour "
                "day month weekday) or 6 (second minute hour day month weekday)"
            )
        self._expanded = expanded
        self._seconds = len(fields) == 6
        hour = fields[2 if self._seconds else 1]
        self.fixed_hour = not (hour == "*" or hour.startswith("*/"))
        """Fixed-hour schedules run once in a repeated DST hour (see the module doc)."""
        try:
            first = self.next_after(_to_ms(datetime(2000, 1, 1, tzinfo=UTC)))
        except (CroniterError, ValueError, KeyError) as exc:
            raise ConfigurationError(f"invalid cron expression {expr!r}: {exc}") from None
        if first is None:
            raise ConfigurationError(
                f"cron expression {expr!r} never fires (e.g. 31 February); check day and month"
            )

    def __repr__(self) -> str:
        return f"CronTrigger({self.expr!r}, tz={self.tz.key!r})"

    def describe(self) -> str:
        return self.expr

    def _iter(self, start: datetime, *, backwards: bool) -> croniter:
        return croniter(
            self._expanded,
            start.astimezone(self.tz),
            ret_type=datetime,
            second_at_beginning=self._seconds,
            is_prev=backwards,
        )

    def _repeated(self, moment: datetime) -> bool:
        """True when ``moment`` is the second occurrence of its local wall-clock time."""
        local = moment.astimezone(self.tz)
        first = local.replace(tzinfo=None).replace(tzinfo=self.tz, fold=0)
        return _to_ms(first) != _to_ms(local)

    def _step(self, ms: int, *, backwards: bool) -> int | None:
        start = datetime.fromtimestamp(ms / 1000, UTC)
        it = self._iter(start, backwards=backwards)
        for _ in range(_MAX_REPEATED):
            try:
                moment: datetime = it.get_prev(datetime) if backwards else it.get_next(datetime)
            except CroniterBadDateError:
                return None
            if not (self.fixed_hour and self._repeated(moment)):
                return _to_ms(moment)
        raise AssertionError(f"cron {self.expr!r}: no fire found around {start.isoformat()}")

    def next_after(self, ms: int) -> int | None:
        return self._step(ms, backwards=False)

    def latest_at_or_before(self, ms: int) -> int | None:
        # croniter's get_prev is strictly before its start: start one ms later.
        return self._step(ms + 1, backwards=True)


class IntervalTrigger:
    """Every ``interval_ms``, at whole multiples of it since the Unix epoch.

    Epoch alignment is what lets independent schedulers agree on tick times without
    talking to each other: ``every(timedelta(minutes=5))`` fires at :00, :05, :10...
    of every hour (UTC; whole-hour offsets make that local time too in most zones),
    whatever time each scheduler started.
    """

    def __init__(self, interval_ms: int) -> None:
        if isinstance(interval_ms, bool) or not isinstance(interval_ms, int):
            raise ConfigurationError(f"interval must be a number of ms, got {interval_ms!r}")
        if interval_ms < MIN_INTERVAL_MS:
            raise ConfigurationError(
                f"interval {interval_ms / 1000:g} s is too short: schedules fire at most once "
                "a second (use a worker loop for anything faster)"
            )
        self.interval_ms = interval_ms

    def __repr__(self) -> str:
        return f"IntervalTrigger({self.interval_ms})"

    def describe(self) -> str:
        return f"every {format_interval(self.interval_ms)}"

    def next_after(self, ms: int) -> int:
        return (ms // self.interval_ms + 1) * self.interval_ms

    def latest_at_or_before(self, ms: int) -> int:
        return ms // self.interval_ms * self.interval_ms


def format_interval(ms: int) -> str:
    """``90000`` → ``1m30s``; ``86400000`` → ``1d``."""
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts) or "0s"


@functools.lru_cache(maxsize=256)
def cron_trigger(expr: str, tz: str) -> CronTrigger:
    """A cached :class:`CronTrigger` (schedulers rebuild triggers on every tick)."""
    return CronTrigger(expr, tz)
