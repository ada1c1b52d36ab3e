"""Real worker processes on one backend (SQLite, and Redis under a random prefix):
shared load, SIGKILL and SIGTERM, each ending with the accounting of ``_accounting``.

The ground truth is the side-effect ledger each handler writes to a separate SQLite
file (see ``worker_proc.py``): it says what really ran, whatever shigoto records.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from shigoto import App, JobState

from ._procs import (
    Cluster,
    all_records,
    enqueue_effects,
    executions,
    runs_per_job,
    settle_and_check,
    wait_for_rows,
    wait_until_settled,
)
from .worker_proc import QUEUE


@pytest.mark.slow
async def test_four_processes_share_4000_jobs_and_run_each_exactly_once(
    cluster: Cluster, app: App
) -> None:
    ids = await enqueue_effects(app, 4000)
    started = time.monotonic()
    workers = [cluster.spawn(concurrency=16, burst=True) for _ in range(4)]
    codes = [await asyncio.to_thread(w.proc.wait, 60) for w in workers]
    elapsed = time.monotonic() - started
    assert codes == [0, 0, 0, 0], cluster.logs_text()

    runs = runs_per_job(cluster.effects)
    assert sum(runs.values()) == 4000  # exactly one side effect per job...
    assert set(runs) == set(ids)  # ...for every job
    assert [job for job, n in runs.items() if n > 1] == []  # ...and none twice
    counts = await app.queue(QUEUE).counts()
    assert counts["completed"] == 4000, counts
    share = Counter(pid for _, _, pid, _ in executions(cluster.effects))
    assert len(share) >= 2, "the load was not shared between processes"
    report = await settle_and_check(app, cluster, ids)
    assert report.duplicated == report.overlapping == 0, report
    print(f"4 processes, 4000 jobs: {elapsed:.1f} s, jobs per process {sorted(share.values())}")


async def test_a_job_of_a_killed_worker_is_finished_by_another_after_its_lease(
    cluster: Cluster, app: App
) -> None:
    [job_id] = await enqueue_effects(app, 1, sleep=30.0, slow_once=True)
    fast = {"concurrency": 1, "lease": 1.0, "stall_check": 0.2}
    doomed = cluster.spawn(**fast)
    [(_, _, pid, doomed_id)] = await wait_for_rows(cluster.effects, 1)
    assert pid == doomed.pid
    survivor = cluster.spawn(**fast)  # started after the claim: it sees the job stall
    await asyncio.sleep(0.3)

    killed_at = time.monotonic()
    doomed.kill()  # SIGKILL mid-job: no shutdown code runs
    job = await app.queue(QUEUE).get_job(job_id)
    assert job is not None
    assert await job.wait_until_finished(timeout=10) == 0
    recovered_after = time.monotonic() - killed_at

    assert 0.5 < recovered_after < 5  # not before the lease (1 s) could have expired
    record = await job.refresh()
    assert record.state is JobState.COMPLETED
    assert record.stalls == 1 and record.attempts == 1
    [stalled] = record.errors
    assert stalled.error_type == "Stalled" and stalled.worker_id == doomed_id
    ledger = executions(cluster.effects)
    assert [row[2] for row in ledger] == [doomed.pid, survivor.pid]
    assert survivor.alive()
    report = await settle_and_check(app, cluster, [job_id], faulted=[doomed_id])
    assert report.duplicated == report.overlapping == 1, report


@pytest.mark.parametrize(
    ("grace", "interrupted"),
    [(3.0, False), (0.3, True)],
    ids=["running-jobs-finish", "stragglers-released"],
)
async def test_sigterm_under_load_exits_within_grace_and_loses_no_job(
    cluster: Cluster, app: App, grace: float, interrupted: bool
) -> None:
    rng = random.Random(7)

    def sleep(n: int) -> float:
        # the first jobs claimed are long when this round is about stragglers
        return rng.uniform(1.0, 1.5) if interrupted and n < 8 else rng.uniform(0.02, 0.2)

    ids = await enqueue_effects(app, 300, sleep=sleep, slow_once=True)
    first = cluster.spawn(concurrency=8, grace=grace)
    await wait_for_rows(cluster.effects, 8)
    await asyncio.sleep(0.3)

    signalled = time.monotonic()
    first.terminate()
    code = await asyncio.to_thread(first.proc.wait, grace + 10)
    took = time.monotonic() - signalled
    output = first.output()
    assert code == 0, output
    assert took < grace + 1.5, f"took {took:.1f} s with a grace of {grace} s"
    assert "SIGTERM received" in output and "done" in output
    counts = await app.queue(QUEUE).counts()
    assert counts["active"] == 0, counts  # nothing left holding a lease
    released = [
        r
        for r in (await all_records(app)).values()
        if any(e.error_type == "WorkerShutdown" for e in r.errors)
    ]
    assert bool(released) is interrupted
    assert all(r.state is JobState.WAITING and r.attempts == 0 for r in released)

    second = cluster.spawn(concurrency=16, burst=True)
    assert await asyncio.to_thread(second.proc.wait, 60) == 0, second.output()
    counts = await wait_until_settled(app, 300, timeout=5)
    assert counts["completed"] == 300, counts
    runs = runs_per_job(cluster.effects)
    assert set(runs) == set(ids)
    twice = {job for job, n in runs.items() if n > 1}
    # only a job interrupted by the shutdown ran again
    assert twice == {r.id for r in released}
    report = await settle_and_check(app, cluster, ids)
    assert report.duplicated == len(released), report
