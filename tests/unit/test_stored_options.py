"""Job options are stored as their difference from a frozen base, and read back whole."""

from __future__ import annotations

import msgspec
import pytest

from shigoto.backends.stored_options import OPTIONS_BASE, changed_options, options_from
from shigoto.job import Backoff, JobOptions, Retention


def test_the_options_base_is_today_s_defaults() -> None:
    """The base was ``JobOptions()`` when it was frozen; if the defaults move, the base
    must not (stored jobs keep their options): change this test, not the base."""
    assert msgspec.to_builtins(JobOptions()) == OPTIONS_BASE
    assert changed_options(JobOptions()) == {}
    assert options_from({}) == JobOptions()


def test_only_what_differs_is_stored_and_reads_back_whole() -> None:
    options = JobOptions(
        attempts=5,
        backoff=Backoff.fixed(1),
        actor="alice",
        remove_on_complete=Retention(count=0),
    )

    changed = changed_options(options)

    assert set(changed) == {"attempts", "backoff", "actor", "remove_on_complete"}
    assert options_from(changed) == options
    assert options_from(msgspec.to_builtins(options)) == options  # stored whole, before


def test_stored_options_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        options_from({"attempts": "three"})
    with pytest.raises(msgspec.ValidationError):
        options_from({"no_such_option": 1})
