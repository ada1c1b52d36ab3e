"""Pure parts of the dead-letter tools: filters, rates, CLI durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest

from shigoto import ConfigurationError
from shigoto.backends.contract import DeadFilter, DeadLetter
from shigoto.cli.dlq import parse_duration, parse_when
from shigoto.dead_letter_query import build_query, fingerprint_of, parse_rate
from shigoto.idempotency import dedup_fields
from shigoto.job import AttemptError

NOW = 1_700_000_000_000


@pytest.mark.parametrize(
    ("given", "per_second"),
    [
        (100, 100.0),
        ("100/s", 100.0),
        ("600/m", 10.0),
        ("7200/h", 2.0),
        ("0.5", 0.5),
        ("5/min", 5 / 60),
    ],
)
def test_rates(given: str | float, per_second: float) -> None:
    assert parse_rate(given) == pytest.approx(per_second)


@pytest.mark.parametrize("given", ["fast", "0/s", "-1", "10/d", ""])
def test_bad_rates_are_refused(given: str) -> None:
    with pytest.raises(ConfigurationError, match="rate"):
        parse_rate(given)


def test_filters_accept_one_value_or_several() -> None:
    query = build_query(
        NOW,
        name="mail",
        reason=["timeout", "unrecoverable"],
        error_type=("KeyError",),
        fingerprint="ABCD12",
        since=timedelta(hours=1),
        until=datetime(2024, 1, 1, tzinfo=UTC),
    )

    assert query.where == DeadFilter(
        names=("mail",),
        reasons=("timeout", "unrecoverable"),
        error_types=("KeyError",),
        since_ms=NOW - 3_600_000,
        until_ms=1_704_067_200_000,
    )
    assert query.fingerprints == ("abcd12",)
    assert not query.is_empty
    assert build_query(NOW).is_empty


def test_older_than_narrows_until() -> None:
    query = build_query(NOW, older_than=timedelta(days=1), until=timedelta(hours=1))
    assert query.where.until_ms == NOW - 86_400_000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reason": "tired"}, "unknown dead reason"),
        ({"fingerprint": "xyz"}, "fingerprint"),
        ({"name": ""}, "non-empty"),
        ({"since": "yesterday"}, "datetime or a timedelta"),
        ({"older_than": -5}, "older_than"),
    ],
)
def test_bad_filters_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        build_query(NOW, **kwargs)  # type: ignore[arg-type]


def test_a_fingerprint_filter_matches_by_prefix() -> None:
    error = AttemptError(1, "KeyError", "user 3", "", "w", None, NOW)
    letter = DeadLetter("j", "q", "task", "retries_exhausted", 1, NOW, NOW, error)
    key = fingerprint_of(letter).key

    assert build_query(NOW, fingerprint=key[:4]).matches(letter)
    assert not build_query(
        NOW, fingerprint="0000" if not key.startswith("0000") else "ffff"
    ).matches(letter)


def test_dedup_fields() -> None:
    assert dedup_fields(None, None) == (None, None)
    assert dedup_fields("k", None) == ("k", None)
    assert dedup_fields("k", timedelta(minutes=1)) == ("k", 60_000)
    with pytest.raises(ConfigurationError):
        dedup_fields("k" * 600, None)
    with pytest.raises(ConfigurationError):
        dedup_fields("k", 0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("1h30m", 5400)],
)
def test_cli_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_cli_moments_are_durations_ago_or_dates() -> None:
    assert parse_when("2h") == timedelta(hours=2)
    assert parse_when("2024-05-01T09:00") == datetime(2024, 5, 1, 9, 0)
    assert parse_when(None) is None
    with pytest.raises(click.BadParameter):
        parse_when("last tuesday")
