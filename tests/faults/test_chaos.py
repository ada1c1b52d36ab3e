"""Randomised rounds of SIGKILL against worker processes under load, on SQLite and on
Redis. ``make test`` runs a quick round (a few kills); ``make faults`` runs the full
one of issue 10 (4 workers, 5,000 jobs, 50 kills).

Each ends with the accounting of ``_accounting.check``: every job completed, or dead
with a reason (only ``stalled_too_often``); none left active or holding a lease; at
least one side effect per completed job; duplicates only for jobs in flight at a kill;
no two runs at once unless the earlier one had lost its lease to a stall.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from shigoto import App

from ._procs import Cluster, assert_active_leased, enqueue_effects, settle_and_check

WORKERS = 4
FAST = {"concurrency": 4, "lease": 1.0, "stall_check": 0.2, "grace": 2.0}


async def sigkill_rounds(cluster: Cluster, jobs: int, rounds: int, settle_s: float) -> str:
    seed = int(os.environ.get("SHIGOTO_FAULT_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    app = App(cluster.url, max_stalls=5)
    try:
        sleeps = {n: rng.uniform(0.005, 0.12) for n in range(jobs)}
        ids = await enqueue_effects(app, jobs, sleep=sleeps.__getitem__)
        for _ in range(WORKERS):
            cluster.spawn(**FAST)

        killed: set[str] = set()
        for _ in range(rounds):
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            victim = rng.choice(cluster.live())
            await asyncio.to_thread(victim.kill)
            killed.add(f"proc-{victim.pid}")
            cluster.spawn(**FAST)  # keep the pool at WORKERS processes
            await assert_active_leased(app)

        report = await settle_and_check(
            app,
            cluster,
            ids,
            timeout=settle_s,
            faulted=killed,
            dead_reasons={"stalled_too_often"},
        )
    finally:
        await app.close()
    summary = f"seed={seed} kills={len(killed)} {report}"
    print(summary)
    return summary


@pytest.mark.timeout(120)
async def test_a_few_random_sigkills_lose_no_job(
    cluster: Cluster, record_property: pytest.RecordProperty
) -> None:
    record_property("chaos", await sigkill_rounds(cluster, 400, 3, settle_s=60))


@pytest.mark.faults
@pytest.mark.timeout(600)
async def test_fifty_random_sigkills_over_5000_jobs_lose_no_job(
    cluster: Cluster, record_property: pytest.RecordProperty
) -> None:
    record_property("chaos", await sigkill_rounds(cluster, 5000, 50, settle_s=300))
