"""Parsing of rate limits and group keys (shigoto.limits): pure functions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shigoto import RateLimited
from shigoto.backends.contract import QueueLimits
from shigoto.errors import ConfigurationError
from shigoto.limits import build_limits, describe, format_rate, parse_rate, validate_group


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("100/s", (100, 1000)),
        ("600/m", (600, 60_000)),
        ("10/h", (10, 3_600_000)),
        ("1/d", (1, 86_400_000)),
        ("5/10s", (5, 10_000)),
        ("3/250ms", (3, 250)),
        (" 7 / 2 min ", (7, 120_000)),
        ("100/second", (100, 1000)),
        ("100/seconds", (100, 1000)),
        ("20/mins", (20, 60_000)),
        ((50, 1.5), (50, 1500)),
        ((50, timedelta(minutes=1)), (50, 60_000)),
    ],
)
def test_rates_parse_to_count_and_period_ms(spec: object, expected: tuple[int, int]) -> None:
    assert parse_rate(spec) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec", ["", "100", "100/", "/s", "100/x", "0/s", "-1/s", "1.5/s", "100/0s", (1,), (0, 1)]
)
def test_bad_rates_raise_a_configuration_error_naming_the_input(spec: object) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit"):
        parse_rate(spec)  # type: ignore[arg-type]


def test_a_rate_over_the_log_size_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="between 1 and"):
        parse_rate("1000000/s")


def test_rates_print_in_their_shortest_exact_form() -> None:
    assert format_rate(100, 1000) == "100/s"
    assert format_rate(600, 60_000) == "600/m"
    assert format_rate(5, 10_000) == "5/10s"
    assert format_rate(3, 250) == "3/250ms"
    assert format_rate(None, None) is None


def test_limits_build_and_describe_round_trip() -> None:
    limits = build_limits(rate_limit="100/s", max_active=5, group_rate_limit="10/m")
    assert limits == QueueLimits(100, 1000, 5, 10, 60_000)
    assert describe(limits) == {"rate_limit": "100/s", "max_active": 5, "group_rate_limit": "10/m"}
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ConfigurationError, match="max_active"):
            build_limits(max_active=bad)  # type: ignore[arg-type]


def test_group_keys_are_non_empty_strings_without_nul() -> None:
    assert validate_group("acme") == "acme"
    assert validate_group(42) == "42"
    assert validate_group(None) is None
    for bad in ("", "a\0b", "x" * 201, 1.5, b"acme"):
        with pytest.raises(ConfigurationError):
            validate_group(bad)


def test_rate_limited_takes_seconds_or_a_timedelta() -> None:
    assert RateLimited(30).retry_after_s == 30.0
    assert RateLimited(timedelta(minutes=1), hold=False).retry_after_s == 60.0
    assert RateLimited().hold is True
    with pytest.raises(ConfigurationError):
        RateLimited(-1)
