"""One source of time for everything that talks to a backend.

Backends never read the clock themselves: time enters each transition as an integer
number of milliseconds from a :class:`Clock`. Tests therefore freeze or advance time
instead of sleeping. Leases assume worker clocks agree within a small fraction of the
lease length (NTP keeps them within milliseconds; the default lease is 30 s).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Protocol

Seconds = float | int | timedelta
"""Durations in the public API: seconds as a number, or a ``timedelta``."""


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """Wall-clock time (``time.time``), shared across processes and machines."""

    def now_ms(self) -> int:
        # integer nanoseconds: no float to build and convert (a worker reads the clock
        # two or three times per job)
        return time.time_ns() // 1_000_000


class FrozenClock:
    """A clock that moves only when told to: for deterministic tests."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += round(seconds * 1000)


def seconds_of(value: Seconds) -> float:
    """A duration as float seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def to_ms(value: Seconds) -> int:
    """A duration as whole milliseconds (the unit at the backend boundary)."""
    return round(seconds_of(value) * 1000)
