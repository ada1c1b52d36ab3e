"""Randomised rounds of SIGKILL against worker processes under load (``make faults``).

Final accounting, from shigoto's records and the independent side-effect ledger:
every job completed, or dead with a reason; none left active; at least one side effect
per completed job; and a job ran more than once only if it was in flight at a kill
(its history then holds a ``Stalled`` entry naming the killed worker).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shigoto import App, JobState

from ._procs import (
    Cluster,
    all_records,
    enqueue_effects,
    executions,
    make_cluster,
    wait_until_settled,
)

JOBS = 2000
WORKERS = 4
ROUNDS = 20
FAST = {"concurrency": 4, "lease": 1.0, "stall_check": 0.2, "grace": 2.0}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = make_cluster(tmp_path)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop_all)


@pytest.mark.faults
@pytest.mark.timeout(300)
async def test_random_sigkills_lose_no_job(
    cluster: Cluster, record_property: pytest.RecordProperty
) -> None:
    seed = int(os.environ.get("SHIGOTO_FAULT_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    app = App(cluster.url, max_stalls=5)
    try:
        sleeps = {n: rng.uniform(0.005, 0.12) for n in range(JOBS)}
        ids = await enqueue_effects(app, JOBS, sleep=sleeps.__getitem__)
        for _ in range(WORKERS):
            cluster.spawn(**FAST)

        killed: set[str] = set()
        for _ in range(ROUNDS):
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            victim = rng.choice(cluster.live())
            victim.kill()
            killed.add(f"proc-{victim.pid}")
            cluster.spawn(**FAST)  # keep the pool at WORKERS processes

        counts = await wait_until_settled(app, JOBS, timeout=120)
        records = await all_records(app)
    finally:
        await app.close()
    await asyncio.to_thread(cluster.stop_all)

    ledger = executions(cluster.effects)
    runs: dict[str, list[str]] = {}
    for job_id, _, _, worker_id in ledger:
        runs.setdefault(job_id, []).append(worker_id)

    # every job accounted for, in a final state, with a reason when dead
    assert set(records) == set(ids)
    assert counts["active"] == counts["waiting"] == counts["delayed"] == 0, counts
    assert counts["completed"] + counts["dead"] == JOBS, counts
    dead = [r for r in records.values() if r.state is JobState.DEAD]
    assert all(r.reason == "stalled_too_often" for r in dead), {r.reason for r in dead}
    for record in records.values():
        assert record.lease_until_ms is None
        if record.state is JobState.COMPLETED:
            assert len(runs.get(record.id, [])) >= 1, record.id

    # a job ran twice only if a kill hit it while in flight
    duplicates = {job: workers for job, workers in runs.items() if len(workers) > 1}
    for job_id, workers in duplicates.items():
        stalls = [e for e in records[job_id].errors if e.error_type == "Stalled"]
        assert len(stalls) >= len(workers) - 1, (job_id, workers, records[job_id].errors)
        assert {e.worker_id for e in stalls} <= killed
    stalled_jobs = sum(1 for r in records.values() if r.stalls)
    summary = (
        f"seed={seed} kills={len(killed)} jobs={JOBS} completed={counts['completed']} "
        f"dead={counts['dead']} stalled_jobs={stalled_jobs} "
        f"executions={len(ledger)} duplicated_jobs={len(duplicates)}"
    )
    record_property("chaos", summary)
    print(summary)
