"""RunRecorder.flush: buffered run entries are written once each, in order, even when
the worker's acknowledgements and the timer flush at the same time."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

from shigoto import App
from shigoto.backends.contract import AUDIT_BATCH, AuditEntry
from shigoto.job import JobOptions, JobRecord, JobState
from shigoto.security.audit import RunRecorder


def record(job_id: str) -> JobRecord:
    return JobRecord(job_id, "q", "task", b"{}", JobOptions(), JobState.ACTIVE, 0, 0, 0, 1)


class SlowTrail:
    """Stands in for a backend: records each append after a pause."""

    def __init__(self) -> None:
        self.appended: list[AuditEntry] = []
        self.fail = False
        self.calls = 0

    async def audit_append(self, entries: Sequence[AuditEntry]) -> None:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise ConnectionError("down")
        self.appended += entries

    async def audit_prune(self, **_: Any) -> int:
        return 0


def recorder() -> tuple[RunRecorder, SlowTrail]:
    runs = RunRecorder(App("redis://127.0.0.1:1/0").audit, "w")
    trail = SlowTrail()
    runs._backend = trail  # type: ignore[assignment]
    return runs, trail


async def test_concurrent_flushes_write_each_entry_once_in_order() -> None:
    runs, trail = recorder()
    for n in range(5):
        runs.started([record(f"job-{n}")], n)

    first = asyncio.ensure_future(runs.flush())
    await asyncio.sleep(0)
    runs.completed([record("job-0")], 9)
    await asyncio.gather(first, runs.flush(), runs.flush())

    assert [(e.job_id, e.action) for e in trail.appended] == [
        *((f"job-{n}", "job.start") for n in range(5)),
        ("job-0", "job.end"),
    ]
    assert list(runs.pending) == []


async def test_a_failed_write_keeps_the_entries_for_the_next_flush() -> None:
    runs, trail = recorder()
    runs.started([record("job-1")], 1)
    trail.fail = True

    await runs.flush()

    assert trail.appended == [] and len(runs.pending) == 1
    trail.fail = False
    await runs.flush()
    assert [e.job_id for e in trail.appended] == ["job-1"]


async def test_a_flush_writes_what_was_buffered_when_it_was_called_not_what_came_after() -> None:
    runs, trail = recorder()
    runs.started([record("job-1")], 1)

    flushing = asyncio.ensure_future(runs.flush())
    await asyncio.sleep(0)
    runs.started([record("job-2")], 2)  # while the first write is on its way
    await flushing

    assert [e.job_id for e in trail.appended] == ["job-1"]
    assert [e.job_id for e in runs.pending] == ["job-2"]
    await runs.flush()
    assert [e.job_id for e in trail.appended] == ["job-1", "job-2"]


async def test_a_group_longer_than_a_batch_is_written_a_batch_at_a_time_in_order() -> None:
    runs, trail = recorder()
    runs.started([record(f"job-{n}") for n in range(AUDIT_BATCH + 500)], 1)
    runs.completed([record("job-0")], 2)

    await runs.flush()

    assert trail.calls == 2
    assert [e.job_id for e in trail.appended] == [
        *(f"job-{n}" for n in range(AUDIT_BATCH + 500)),
        "job-0",
    ]
    assert list(runs.pending) == [] and runs._count == 0


async def test_a_full_batch_is_written_at_once_not_at_the_next_tick() -> None:
    """A busy worker's entries go out a batch at a time as they fill, not as a burst of
    appends per tick that the worker's own claims would wait behind."""
    runs, trail = recorder()
    runs.FLUSH_S = 60.0  # the timer alone would not write anything within this test
    flusher = asyncio.create_task(runs._loop())
    try:
        for n in range(AUDIT_BATCH // 2):
            runs.started([record(f"job-{n}")], n)
            runs.completed([record(f"job-{n}")], n)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if trail.appended:
                break
        assert len(trail.appended) == AUDIT_BATCH and list(runs.pending) == []

        runs.started([record("job-x")], 1)  # a partial batch waits for the timer
        await asyncio.sleep(0.05)
        assert len(trail.appended) == AUDIT_BATCH
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)


async def test_a_full_batch_is_retried_every_tick_not_every_job_while_the_backend_is_down() -> None:
    runs, trail = recorder()
    runs.FLUSH_S = 0.05
    trail.fail = True
    flusher = asyncio.create_task(runs._loop())
    try:
        for n in range(AUDIT_BATCH * 2):
            runs.started([record(f"job-{n}")], n)
            if n % 100 == 0:
                await asyncio.sleep(0.001)
        await asyncio.sleep(0.12)
        assert 1 <= trail.calls <= 4
        assert len(runs.pending) == AUDIT_BATCH * 2  # kept for when it is back

        trail.fail = False
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not runs.pending:
                break
        assert [e.job_id for e in trail.appended] == [f"job-{n}" for n in range(AUDIT_BATCH * 2)]
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)


async def test_run_entries_share_a_local_file_s_connection_but_not_a_server_s(
    monkeypatch: Any,
) -> None:
    from shigoto.backends.contract import Capabilities

    opened: list[str] = []

    class Local(SlowTrail):
        capabilities = Capabilities(name="sqlite", multi_host=False)

        async def close(self) -> None:
            opened.append("closed")

    class Server(Local):
        capabilities = Capabilities(name="redis", multi_host=True)

    def open_backend(url: str) -> Server:
        opened.append(url)
        return Server()

    monkeypatch.setattr("shigoto.backends.open_backend", open_backend)
    for worker_backend, owned in ((Local(), False), (Server(), True)):
        runs = RunRecorder(App("redis://127.0.0.1:1/0").audit, "w")
        runs.start(worker_backend)  # type: ignore[arg-type]
        assert (runs._backend is worker_backend) is not owned
        await runs.close()

    # one connection of its own for the server, closed with the recorder; the shared
    # one is left to its owner
    assert opened == ["redis://127.0.0.1:1/0", "closed"]


def test_buffered_run_entries_are_not_tracked_by_the_garbage_collector() -> None:
    """A busy worker holds tens of thousands of them between flushes; tracked, they made
    the collector run about four times as often (1.3 µs per job, bench/features.py).
    They are held as groups of entries alike but for the job id."""
    runs, _ = recorder()
    runs.started([record("job-1"), record("job-2")], 1_700_000_000_000)
    runs.completed([record("job-1")], 1_700_000_000_001)
    runs.note("job.end", "q", "job-2", "api", outcome="released")

    assert [gc.is_tracked(group) for group in runs._pending] == [False, False, False]
    assert [len(group.job_ids) for group in runs._pending] == [2, 1, 1]
