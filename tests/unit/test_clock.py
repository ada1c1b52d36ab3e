"""Time at the backend boundary: integer milliseconds from one clock."""

from __future__ import annotations

from datetime import timedelta

from shigoto import FrozenClock, SystemClock
from shigoto.clock import seconds_of, to_ms


def test_a_frozen_clock_moves_only_when_advanced() -> None:
    clock = FrozenClock(1_000)

    assert clock.now_ms() == clock.now_ms() == 1_000
    clock.advance(2.5)
    assert clock.now_ms() == 3_500


def test_the_system_clock_is_epoch_milliseconds() -> None:
    assert SystemClock().now_ms() > 1_600_000_000_000


def test_durations_convert_to_whole_milliseconds() -> None:
    assert to_ms(1.5) == 1_500
    assert to_ms(timedelta(minutes=1)) == 60_000
    assert to_ms(0.0005) in (0, 1)
    assert to_ms(0.05) == 50
    assert seconds_of(timedelta(milliseconds=250)) == 0.25
