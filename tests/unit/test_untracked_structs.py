"""Structs that a bulk add or a busy worker holds by the thousand are not tracked by the
cyclic garbage collector (msgspec ``gc=False``): none of them can be in a reference
cycle, and tracked they made the collector run about twice as often during a bulk add
(``bench/features.py`` and ``add_bulk`` measured it; see bench/README.md)."""

from __future__ import annotations

import gc

from shigoto.backends.contract import AuditEntry, Enqueued, NewJob
from shigoto.job import JobOptions, JobState


def test_jobs_being_added_and_their_outcomes_are_not_tracked() -> None:
    new = NewJob("j1", "q", "task", b"{}", JobOptions(), 0, 0, dedup_key="k", group="g")
    done = Enqueued("j1", True, JobState.WAITING)
    entry = AuditEntry(0, "api", "enqueue", "q", "j1", b"{}")

    assert not gc.is_tracked(new)
    assert not gc.is_tracked(done)
    assert not gc.is_tracked(entry)
