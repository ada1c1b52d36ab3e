"""RunRecorder: a worker's job.start / job.end entries, built from pre-encoded parts."""

from __future__ import annotations

import msgspec
import pytest

from shigoto import App
from shigoto.clock import FrozenClock
from shigoto.job import JobOptions, JobRecord, JobState
from shigoto.security.audit import RunRecorder, details_of


def record(job_id: str, actor: str | None = None, attempts: int = 1) -> JobRecord:
    options = JobOptions(actor=actor)
    return JobRecord(job_id, "q", "task", b"{}", options, JobState.ACTIVE, 0, 0, 0, attempts)


@pytest.fixture
def runs() -> RunRecorder:
    app = App("redis://127.0.0.1:1/0", clock=FrozenClock(1_000))
    return RunRecorder(app.audit, "host:1:ab")


@pytest.mark.parametrize("actor", ["alice", None, 'odd "actor" \\ é'])
@pytest.mark.parametrize("attempt", [0, 1, 7, 8, 1234])
def test_the_fast_entries_equal_the_general_ones(
    runs: RunRecorder, actor: str | None, attempt: int
) -> None:
    runs.started([record("job-1", actor, attempt)], 1_000)
    runs.completed([record("job-1", actor, attempt)], 1_000)
    runs.note("job.start", "q", "job-1", actor, attempt=attempt)
    runs.note("job.end", "q", "job-1", actor, outcome="completed")

    fast_start, fast_end, start, end = runs.pending
    assert fast_start == start and fast_end == end
    assert details_of(fast_start) == {
        "attempt": attempt,
        "worker_id": "host:1:ab",
        **({"for": actor} if actor else {}),
    }
    assert msgspec.json.decode(fast_end.details or b"")["outcome"] == "completed"
    assert (fast_start.actor, fast_start.action) == ("worker:host:1:ab", "job.start")


def test_nothing_is_buffered_when_run_entries_are_off() -> None:
    from shigoto.security import AuditSettings

    app = App("redis://127.0.0.1:1/0", audit=AuditSettings(runs=False))
    runs = RunRecorder(app.audit, "w")

    runs.started([record("job-1", "alice")], 1)
    runs.completed([record("job-1", "alice")], 2)
    runs.note("job.end", "q", "job-1", "alice", outcome="dead")

    assert list(runs.pending) == []


def test_a_claimed_batch_is_held_as_groups_alike_but_for_the_job_id(runs: RunRecorder) -> None:
    # one group per run of jobs with the same details (enqueuer, attempt) and queue
    runs.started(
        [
            record("a", "alice"),
            record("b", "alice"),
            record("c", "bob"),
            record("d", "bob"),
            record("e", "bob", attempts=2),
        ],
        1_000,
    )
    runs.completed([record("a", "alice"), record("b", "alice")], 1_001)

    assert [(g.action, g.job_ids) for g in runs._pending] == [
        ("job.start", ["a", "b"]),
        ("job.start", ["c", "d"]),
        ("job.start", ["e"]),
        ("job.end", ["a", "b"]),
    ]
    assert [e.job_id for e in runs.pending] == ["a", "b", "c", "d", "e", "a", "b"]


def test_a_new_group_opens_where_the_queue_changes_and_ends_ignore_the_attempt(
    runs: RunRecorder,
) -> None:
    other = JobRecord("c", "other", "task", b"{}", JobOptions(), JobState.ACTIVE, 0, 0, 0, 1)
    runs.started([record("a"), record("b"), other, record("d")], 1_000)
    runs.completed([record("a", attempts=1), record("b", attempts=5)], 1_001)

    assert [(g.action, g.queue, g.job_ids) for g in runs._pending] == [
        ("job.start", "q", ["a", "b"]),
        ("job.start", "other", ["c"]),
        ("job.start", "q", ["d"]),
        ("job.end", "q", ["a", "b"]),
    ]
    assert len(runs.pending) == 6
