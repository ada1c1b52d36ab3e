"""retry.decide: every branch of "what now?" after a failed attempt."""

from __future__ import annotations

import pytest

from shigoto import Backoff, Retry, UnrecoverableError
from shigoto.retry import GiveUp, RetryAt, decide

BACKOFF = Backoff.exponential(2, max_delay=60)


def test_a_failure_with_attempts_left_is_retried_on_the_backoff_schedule() -> None:
    assert decide(ValueError("x"), 1, 3, BACKOFF) == RetryAt(2.0)
    assert decide(ValueError("x"), 2, 3, BACKOFF) == RetryAt(4.0)


def test_the_last_attempt_failing_exhausts_the_retries() -> None:
    assert decide(ValueError("x"), 3, 3, BACKOFF) == GiveUp("retries_exhausted")


def test_attempts_made_beyond_the_limit_also_give_up() -> None:
    assert decide(ValueError("x"), 7, 3, BACKOFF) == GiveUp("retries_exhausted")


def test_an_unrecoverable_error_gives_up_whatever_attempts_remain() -> None:
    assert decide(UnrecoverableError("bad input"), 1, 10, BACKOFF) == GiveUp("unrecoverable")


def test_an_unrecoverable_error_wins_over_should_retry() -> None:
    def always(error: BaseException, attempts: int) -> bool:
        raise AssertionError("should_retry must not be asked about an unrecoverable error")

    assert decide(UnrecoverableError(), 1, 10, BACKOFF, always) == GiveUp("unrecoverable")


def test_a_subclass_of_unrecoverable_error_is_unrecoverable() -> None:
    class InvalidEmail(UnrecoverableError):
        pass

    assert decide(InvalidEmail(), 1, 3, BACKOFF) == GiveUp("unrecoverable")


def test_should_retry_false_declines_even_with_attempts_left() -> None:
    assert decide(KeyError("x"), 1, 5, BACKOFF, lambda e, n: False) == GiveUp(
        "should_retry_declined"
    )


def test_should_retry_true_retries_beyond_the_attempts_limit() -> None:
    assert decide(ConnectionError(), 9, 3, BACKOFF, lambda e, n: n < 10) == RetryAt(60.0)


def test_should_retry_none_defers_to_the_attempts_limit() -> None:
    assert decide(OSError(), 1, 2, BACKOFF, lambda e, n: None) == RetryAt(2.0)
    assert decide(OSError(), 2, 2, BACKOFF, lambda e, n: None) == GiveUp("retries_exhausted")


def test_should_retry_sees_the_error_and_the_attempts_made() -> None:
    seen: list[tuple[BaseException, int]] = []
    error = ConnectionRefusedError("refused")

    def record(e: BaseException, n: int) -> None:
        seen.append((e, n))

    decide(error, 4, 10, BACKOFF, record)

    assert seen == [(error, 4)]


def test_should_retry_can_tell_errors_apart() -> None:
    def policy(error: BaseException, attempts: int) -> bool:
        return isinstance(error, ConnectionError) and attempts < 10

    assert isinstance(decide(ConnectionRefusedError(), 5, 3, BACKOFF, policy), RetryAt)
    assert decide(ValueError(), 1, 3, BACKOFF, policy) == GiveUp("should_retry_declined")


def test_retry_with_a_delay_overrides_the_backoff() -> None:
    assert decide(Retry(delay=7.5), 1, 3, BACKOFF) == RetryAt(7.5)


def test_retry_without_a_delay_uses_the_backoff() -> None:
    assert decide(Retry(), 2, 3, BACKOFF) == RetryAt(4.0)


def test_retry_still_counts_against_the_attempts() -> None:
    assert decide(Retry(delay=1), 3, 3, BACKOFF) == GiveUp("retries_exhausted")


def test_retry_with_should_retry_true_keeps_its_own_delay() -> None:
    assert decide(Retry(delay=0.5), 5, 3, BACKOFF, lambda e, n: True) == RetryAt(0.5)


def test_retry_accepts_a_timedelta_and_keeps_its_message() -> None:
    from datetime import timedelta

    error = Retry(timedelta(seconds=3), message="429")

    assert error.delay_s == 3.0
    assert str(error) == "429"
    assert str(Retry()) == "retry requested"


@pytest.mark.parametrize("attempts_made", [1, 2])
def test_a_fixed_backoff_gives_the_same_delay_each_time(attempts_made: int) -> None:
    assert decide(RuntimeError(), attempts_made, 3, Backoff.fixed(1.5)) == RetryAt(1.5)
