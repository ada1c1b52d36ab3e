"""The SQLite hot path (issue 14): writes submitted together share one transaction
without sharing their fate, completions of many leases are one statement whose answers
stay exact per lease, and claimed rows decode to the same records as before."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import pytest

from shigoto.backends.contract import Completion, Lease, NewJob
from shigoto.backends.sqlite import backend as sqlite_backend
from shigoto.backends.sqlite.backend import SqliteBackend
from shigoto.job import KEEP_ALL, JobOptions, JobRecord, JobState, Retention

NOW = 1_700_000_000_000
QUEUE = "q"


@pytest.fixture
async def backend(tmp_path: Path) -> SqliteBackend:
    b = SqliteBackend(f"sqlite:///{tmp_path / 'hot.db'}")
    await b.connect()
    yield b  # type: ignore[misc]
    await b.close()


async def _add(backend: SqliteBackend, n: int, options: JobOptions | None = None) -> None:
    jobs = [
        NewJob(f"j{i}", QUEUE, "noop", b"{}", options or JobOptions(), NOW, NOW) for i in range(n)
    ]
    await backend.enqueue(jobs, NOW)


def _completion(lease: Lease, retention: Retention | None = KEEP_ALL) -> Completion:
    return Completion(lease, b"1", NOW, retention)


async def _claim_leases(backend: SqliteBackend, n: int) -> list[Lease]:
    claimed = await backend.claim(QUEUE, limit=n, worker_id="w", lease_ms=60_000, now_ms=NOW)
    return [Lease(c.record.queue, c.record.id, c.token) for c in claimed]


async def test_writes_made_in_one_turn_share_a_transaction_but_fail_alone(
    backend: SqliteBackend,
) -> None:
    """A write that raises is undone alone: the writes travelling with it commit, and
    its caller gets its own exception."""

    def good(name: str) -> object:
        return lambda conn: conn.execute("INSERT INTO queues (name) VALUES (?)", (name,))

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO queues (name) VALUES ('undone')")
        raise ValueError("boom")

    results = await asyncio.gather(
        backend._write(good("first")),  # type: ignore[arg-type]
        backend._write(bad),
        backend._write(good("last")),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert not isinstance(results[0], BaseException)
    assert not isinstance(results[2], BaseException)
    names = await backend._run(lambda c: [r[0] for r in c.execute("SELECT name FROM queues")])
    assert sorted(names) == ["first", "last"]


async def test_a_read_submitted_after_a_write_sees_it(backend: SqliteBackend) -> None:
    write = backend._write(lambda c: c.execute("INSERT INTO queues (name) VALUES ('seen')"))
    read = backend._run(lambda c: c.execute("SELECT count(*) FROM queues").fetchone()[0])
    _, count = await asyncio.gather(write, read)
    assert count == 1


async def test_a_worker_s_completions_and_next_claim_travel_together(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a worker asks for in one event-loop turn is one trip to the thread."""
    from shigoto.backends.sqlite import connection

    trips: list[int] = []
    original = connection._run_trip

    def counting(conn: sqlite3.Connection, lock: object, calls: list[object]) -> object:
        trips.append(len(calls))
        return original(conn, lock, calls)  # type: ignore[arg-type]

    monkeypatch.setattr(connection, "_run_trip", counting)
    await _add(backend, 4)
    first = await _claim_leases(backend, 2)
    trips.clear()
    done, claimed = await asyncio.gather(
        backend.complete([_completion(lease) for lease in first], NOW),
        backend.claim(QUEUE, limit=2, worker_id="w", lease_ms=60_000, now_ms=NOW),
    )
    assert done == [True, True] and len(claimed) == 2
    assert trips == [2]


async def test_a_batch_of_completions_answers_each_lease_exactly(
    backend: SqliteBackend,
) -> None:
    """One lost lease in a batch (a stale token, a lease given twice) does not change
    the answer for the others, and only the held leases complete."""
    await _add(backend, 4)
    leases = await _claim_leases(backend, 4)
    stale = Lease(QUEUE, leases[1].job_id, leases[1].token.split(".")[0] + ".0000000000000000")
    batch = [leases[0], stale, leases[2], leases[2], leases[3]]
    done = await backend.complete([_completion(lease) for lease in batch], NOW)
    assert done == [True, False, True, False, True]
    states = {lease.job_id: (await backend.get(QUEUE, lease.job_id)) for lease in leases}
    assert {job_id: r.state for job_id, r in states.items() if r} == {
        "j0": JobState.COMPLETED,
        "j1": JobState.ACTIVE,
        "j2": JobState.COMPLETED,
        "j3": JobState.COMPLETED,
    }
    # the real lease of j1 still completes afterwards
    assert await backend.complete([_completion(leases[1])], NOW) == [True]


async def test_completions_remove_at_once_and_look_up_retention_when_not_given(
    backend: SqliteBackend,
) -> None:
    await _add(backend, 3, JobOptions(remove_on_complete=Retention(count=0)))
    leases = await _claim_leases(backend, 3)
    done = await backend.complete(
        [
            _completion(leases[0], Retention(count=0)),  # removed in the batched DELETE
            _completion(leases[1], None),  # the backend reads the job's options
            _completion(Lease(QUEUE, leases[2].job_id, "nope"), Retention(count=0)),
        ],
        NOW,
    )
    assert done == [True, True, False]
    assert await backend.get(QUEUE, "j0") is None
    assert await backend.get(QUEUE, "j1") is None
    assert (await backend.get(QUEUE, "j2")).state is JobState.ACTIVE  # type: ignore[union-attr]


async def test_a_lease_from_before_tokens_named_their_row_still_completes(
    backend: SqliteBackend,
) -> None:
    """Jobs claimed by an older version carry a bare random token: they complete
    through the (queue, id, token) statement."""
    await _add(backend, 1)
    [lease] = await _claim_leases(backend, 1)
    assert lease.token.partition(".")[0].isdigit()
    await backend._write(lambda c: c.execute("UPDATE jobs SET token = 'abcdef0123456789'"))
    old = Lease(QUEUE, lease.job_id, "abcdef0123456789")
    assert await backend.complete([_completion(old), _completion(lease)], NOW) == [True, False]
    record = await backend.get(QUEUE, lease.job_id)
    assert record is not None and record.state is JobState.COMPLETED and record.result == b"1"


async def test_claimed_records_decode_field_for_field(backend: SqliteBackend) -> None:
    """``_record`` builds records positionally; the columns must stay in field order."""
    fields = JobRecord.__struct_fields__
    columns = [c.strip() for c in sqlite_backend.RECORD_COLUMNS.split(",")]
    assert [("group" if c == "grp" else c) for c in columns] == list(fields)
    await _add(backend, 1, JobOptions(priority=3, actor="alice"))
    [claimed] = await backend.claim(QUEUE, limit=1, worker_id="w", lease_ms=1000, now_ms=NOW)
    record = claimed.record
    assert msgspec.structs.asdict(record) == {
        "id": "j0",
        "queue": QUEUE,
        "name": "noop",
        "payload": b"{}",
        "options": JobOptions(priority=3, actor="alice"),
        "state": JobState.ACTIVE,
        "priority": 3,
        "created_ms": NOW,
        "ready_ms": NOW,
        "attempts": 1,
        "stalls": 0,
        "started_ms": NOW,
        "finished_ms": None,
        "worker_id": "w",
        "lease_until_ms": NOW + 1000,
        "progress": None,
        "result": None,
        "errors": [],
        "reason": None,
        "cancel_requested": False,
        "group": None,
    }


async def test_a_bulk_enqueue_answers_each_job_exactly(backend: SqliteBackend) -> None:
    """One executemany stores a chunk; an id taken before, or twice in the chunk, sends
    the chunk down the one-job-at-a-time path, with the same answers as always."""
    await _add(backend, 1)  # j0 exists
    later = NOW + 60_000
    jobs = [
        NewJob("j1", QUEUE, "noop", b"{}", JobOptions(), NOW, NOW),
        NewJob("j0", QUEUE, "noop", b"{}", JobOptions(), NOW, NOW),
        NewJob("j2", QUEUE, "noop", b"{}", JobOptions(), NOW, later),
        NewJob("j2", QUEUE, "noop", b"{}", JobOptions(), NOW, NOW),
    ]
    done = await backend.enqueue(jobs, NOW)
    assert [(e.id, e.created, e.state) for e in done] == [
        ("j1", True, JobState.WAITING),
        ("j0", False, JobState.WAITING),
        ("j2", True, JobState.DELAYED),
        ("j2", False, JobState.DELAYED),
    ]
    fresh = [NewJob(f"k{i}", QUEUE, "noop", b"{}", JobOptions(), NOW, NOW) for i in range(3)]
    assert all(e.created for e in await backend.enqueue(fresh, NOW))
    assert (await backend.counts(QUEUE))[JobState.WAITING] == 5


async def test_a_job_stores_only_the_options_that_differ_from_the_frozen_base(
    backend: SqliteBackend,
) -> None:
    """Options are stored as their difference from ``OPTIONS_BASE`` and read back whole;
    rows written before (every field present) read the same."""
    options = JobOptions(attempts=5, actor="alice", remove_on_complete=Retention(count=10))
    await _add(backend, 1, options)
    raw = await backend._run(lambda c: c.execute("SELECT options FROM jobs").fetchone()[0])
    assert msgspec.json.decode(raw) == {
        "attempts": 5,
        "actor": "alice",
        "remove_on_complete": {"count": 10, "age_s": None},
    }
    full = msgspec.json.encode(options)
    await backend._write(lambda c: c.execute("UPDATE jobs SET options = ?", (full,)))
    [claimed] = await backend.claim(QUEUE, limit=1, worker_id="w", lease_ms=1000, now_ms=NOW)
    assert claimed.record.options == options
