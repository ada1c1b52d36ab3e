"""Backoff: the wait before the next attempt, as plain arithmetic."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from shigoto import Backoff, ConfigurationError


def test_a_fixed_backoff_waits_the_same_after_every_failure() -> None:
    backoff = Backoff.fixed(3)

    assert [backoff.delay_after(n) for n in range(1, 6)] == [3.0] * 5
    assert backoff.kind == "fixed"
    assert backoff.max_delay_s is None


def test_an_exponential_backoff_doubles_after_each_failure() -> None:
    backoff = Backoff.exponential(2, max_delay=None)

    assert [backoff.delay_after(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_an_exponential_backoff_is_capped_at_its_max_delay() -> None:
    backoff = Backoff.exponential(2, max_delay=10)

    assert [backoff.delay_after(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_the_default_backoff_is_the_brief_s_two_seconds_capped_at_sixty() -> None:
    backoff = Backoff()

    assert [backoff.delay_after(n) for n in (1, 2, 3, 5, 6, 30)] == [2, 4, 8, 32, 60, 60]
    assert Backoff.exponential() == backoff


def test_a_huge_failure_count_does_not_overflow_the_cap() -> None:
    assert Backoff.exponential(1, max_delay=60).delay_after(1000) == 60.0


def test_failure_counts_below_one_are_treated_as_the_first_failure() -> None:
    assert Backoff.exponential(2).delay_after(0) == 2.0


def test_durations_may_be_timedeltas() -> None:
    backoff = Backoff.exponential(timedelta(milliseconds=500), max_delay=timedelta(seconds=1))

    assert (backoff.delay_s, backoff.max_delay_s) == (0.5, 1.0)
    assert Backoff.fixed(timedelta(minutes=1)).delay_after(4) == 60.0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999, 1.0])
def test_jitter_draws_each_wait_from_the_lower_part_of_the_window(draw: float) -> None:
    backoff = Backoff.exponential(4, max_delay=None, jitter=0.5)

    wait = backoff.delay_after(2, rand=lambda: draw)

    assert 4.0 <= wait <= 8.0
    assert wait == pytest.approx(8.0 * (1 - 0.5 * draw))


def test_jitter_applies_after_the_cap() -> None:
    backoff = Backoff.exponential(1, max_delay=5, jitter=1.0)

    assert backoff.delay_after(10, rand=lambda: 0.0) == 5.0
    assert backoff.delay_after(10, rand=lambda: 1.0) == 0.0


def test_a_fixed_backoff_may_have_jitter_too() -> None:
    backoff = Backoff.fixed(10, jitter=0.2)

    assert backoff.delay_after(1, rand=lambda: 1.0) == pytest.approx(8.0)


def test_no_jitter_never_calls_the_random_source() -> None:
    def explode() -> float:
        raise AssertionError("rand must not be used without jitter")

    assert Backoff.fixed(1).delay_after(1, rand=explode) == 1.0


def test_a_zero_delay_is_allowed() -> None:
    assert Backoff.fixed(0).delay_after(3) == 0.0


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: Backoff.fixed(-1), "delay must be >= 0"),
        (lambda: Backoff.exponential(-0.5), "delay must be >= 0"),
        (lambda: Backoff.exponential(10, max_delay=5), "max_delay"),
        (lambda: Backoff.exponential(1, jitter=1.5), "jitter"),
        (lambda: Backoff.fixed(1, jitter=-0.1), "jitter"),
    ],
)
def test_invalid_backoffs_are_refused_with_a_message_naming_the_problem(
    build: object, words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words):
        build()  # type: ignore[operator]


def test_a_backoff_round_trips_through_json_as_plain_data() -> None:
    backoff = Backoff.exponential(0.5, max_delay=30, jitter=0.1)

    encoded = msgspec.json.encode(backoff)

    assert msgspec.json.decode(encoded, type=Backoff) == backoff
