"""Validation of job options, retention policies, delays and ids: clear errors early."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from shigoto import Backoff, ConfigurationError, JobOptions
from shigoto.job import (
    KEEP_ALL,
    MAX_JOB_ID_LENGTH,
    MAX_PRIORITY,
    MIN_PRIORITY,
    REMOVE_ALL,
    AttemptError,
    JobRecord,
    JobState,
    Retention,
    option_overrides,
    retention,
    validate_delay,
    validate_job_id,
)

# -- option_overrides ---------------------------------------------------------------


def test_only_the_options_actually_given_are_returned() -> None:
    assert option_overrides() == {}
    assert option_overrides(attempts=None, priority=None) == {}
    assert option_overrides(attempts=5) == {"attempts": 5}


def test_every_option_is_translated_to_a_job_options_field() -> None:
    backoff = Backoff.fixed(1)
    out = option_overrides(
        attempts=2,
        backoff=backoff,
        timeout=timedelta(seconds=90),
        priority=-3,
        remove_on_complete=True,
        remove_on_fail=10,
        max_stalls=0,
    )

    assert out == {
        "attempts": 2,
        "backoff": backoff,
        "timeout_s": 90.0,
        "priority": -3,
        "remove_on_complete": REMOVE_ALL,
        "remove_on_fail": Retention(count=10),
        "max_stalls": 0,
    }
    options = msgspec.structs.replace(JobOptions(), **out)
    assert options.timeout_s == 90.0


def test_a_number_as_backoff_means_a_fixed_backoff() -> None:
    assert option_overrides(backoff=5)["backoff"] == Backoff.fixed(5)
    assert option_overrides(backoff=timedelta(seconds=2))["backoff"] == Backoff.fixed(2)


def test_layered_overrides_merge_by_dict_update() -> None:
    layered = {**option_overrides(attempts=3, priority=1), **option_overrides(priority=9)}

    assert layered == {"attempts": 3, "priority": 9}


@pytest.mark.parametrize(
    ("given", "param"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": -1}, "attempts"),
        ({"attempts": 2.5}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"attempts": "3"}, "attempts"),
        ({"backoff": "fast"}, "backoff"),
        ({"backoff": True}, "backoff"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -5}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"priority": 1.5}, "priority"),
        ({"priority": False}, "priority"),
        ({"priority": MAX_PRIORITY + 1}, "priority"),
        ({"priority": MIN_PRIORITY - 1}, "priority"),
        ({"remove_on_complete": -1}, "remove_on_complete"),
        ({"remove_on_fail": "yes"}, "remove_on_fail"),
        ({"max_stalls": -1}, "max_stalls"),
        ({"max_stalls": True}, "max_stalls"),
    ],
)
def test_an_invalid_option_is_refused_with_a_message_naming_it(
    given: dict[str, Any], param: str
) -> None:
    with pytest.raises(ConfigurationError, match=param):
        option_overrides(**given)


def test_an_unknown_option_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="retries") as info:
        option_overrides(retries=3)

    assert "attempts" in str(info.value)


def test_the_priority_bounds_themselves_are_accepted() -> None:
    assert option_overrides(priority=MAX_PRIORITY)["priority"] == MAX_PRIORITY
    assert option_overrides(priority=MIN_PRIORITY)["priority"] == MIN_PRIORITY


def test_configuration_errors_are_value_errors_too() -> None:
    with pytest.raises(ValueError):
        option_overrides(attempts=0)


# -- retention ----------------------------------------------------------------------


def test_retention_true_removes_at_once_and_false_keeps_everything() -> None:
    assert retention(True, "remove_on_complete") == REMOVE_ALL
    assert REMOVE_ALL.removes_immediately and not REMOVE_ALL.keeps_all
    assert retention(False, "remove_on_complete") == KEEP_ALL
    assert KEEP_ALL.keeps_all and not KEEP_ALL.removes_immediately


def test_retention_int_keeps_the_newest_n() -> None:
    policy = retention(100, "remove_on_fail")

    assert policy == Retention(count=100)
    assert not policy.keeps_all and not policy.removes_immediately
    assert retention(0, "remove_on_fail").removes_immediately


def test_retention_timedelta_keeps_jobs_for_that_long() -> None:
    assert retention(timedelta(hours=1), "remove_on_complete") == Retention(age_s=3600.0)


def test_retention_dict_combines_count_and_age() -> None:
    assert retention({"count": 5, "age": 60}, "x") == Retention(count=5, age_s=60.0)
    assert retention({"age": timedelta(minutes=2)}, "x") == Retention(age_s=120.0)
    assert retention({}, "x") == KEEP_ALL


def test_a_retention_instance_passes_through() -> None:
    policy = Retention(count=3, age_s=10)

    assert retention(policy, "x") is policy


@pytest.mark.parametrize(
    "value",
    [
        -1,
        timedelta(0),
        timedelta(seconds=-1),
        {"count": -1},
        {"count": "5"},
        {"age": 0},
        {"age": "old"},
        {"max": 3},
        "forever",
        1.5,
        None,
    ],
)
def test_an_invalid_retention_names_its_parameter(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="remove_on_fail"):
        retention(value, "remove_on_fail")


# -- delays and ids -----------------------------------------------------------------


def test_a_delay_is_seconds_or_a_timedelta_and_none_means_now() -> None:
    assert validate_delay(None) == 0.0
    assert validate_delay(0) == 0.0
    assert validate_delay(2.5) == 2.5
    assert validate_delay(timedelta(minutes=1)) == 60.0


@pytest.mark.parametrize("value", [-1, timedelta(seconds=-3), "5", True, [1]])
def test_an_invalid_delay_is_refused_naming_the_delay(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="delay"):
        validate_delay(value)


def test_a_job_id_is_a_short_non_empty_string() -> None:
    assert validate_job_id(None) is None
    assert validate_job_id("welcome:1") == "welcome:1"
    assert validate_job_id("x" * MAX_JOB_ID_LENGTH) == "x" * MAX_JOB_ID_LENGTH


@pytest.mark.parametrize("value", ["", "x" * (MAX_JOB_ID_LENGTH + 1), 42, b"bytes"])
def test_an_invalid_job_id_is_refused_naming_job_id(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="job_id"):
        validate_job_id(value)


# -- plain data ----------------------------------------------------------------------


def test_final_states_are_completed_dead_and_cancelled() -> None:
    assert {s for s in JobState if s.is_final} == {
        JobState.COMPLETED,
        JobState.DEAD,
        JobState.CANCELLED,
    }


def test_job_options_round_trip_through_json_and_refuse_unknown_fields() -> None:
    options = JobOptions(
        attempts=4, backoff=Backoff.fixed(1), priority=2, remove_on_complete=Retention(count=3)
    )

    assert msgspec.json.decode(msgspec.json.encode(options), type=JobOptions) == options
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"attempts": 1, "bogus": 2}', type=JobOptions)


def test_a_job_record_decodes_its_json_fields_on_demand() -> None:
    error = AttemptError(1, "ValueError", "x", "", "w", 10, 20)
    record = JobRecord(
        id="j",
        queue="q",
        name="n",
        payload=b'{"a": 1}',
        options=JobOptions(),
        state=JobState.COMPLETED,
        priority=0,
        created_ms=0,
        ready_ms=0,
        started_ms=100,
        finished_ms=350,
        result=b"[1,2]",
        progress=b"50",
        errors=[error],
    )

    assert record.data == {"a": 1}
    assert record.result_value == [1, 2]
    assert record.progress_value == 50
    assert record.last_error is error
    assert record.duration_ms == 250
    blank = msgspec.structs.replace(record, result=None, progress=None, errors=[], finished_ms=None)
    assert (blank.result_value, blank.progress_value, blank.last_error) == (None, None, None)
    assert blank.duration_ms is None
