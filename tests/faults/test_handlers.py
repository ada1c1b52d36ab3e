"""Handlers that misbehave: hang past their timeout (async, and sync in a thread that
cannot be interrupted), raise from ``__del__``, leak threads, return results that are
not JSON, or call ``os._exit`` in a real worker process. The worker keeps serving and
every job ends completed or dead with a reason."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shigoto import App, JobContext, JobState

from ._procs import Cluster, enqueue_effects, settle_and_check, wait_for_rows
from .conftest import fault_url

Q = "handlers"


class ExplodesOnDel:
    def __del__(self) -> None:
        raise RuntimeError("boom from __del__")


@pytest.fixture
async def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    """An app whose handlers misbehave, each job given a single attempt."""
    instance = App(fault_url(request.param, tmp_path), attempts=1)
    release = threading.Event()

    @instance.job(queue=Q, timeout=0.5)
    async def hangs(ctx: JobContext) -> None:
        await asyncio.sleep(3600)

    @instance.job(queue=Q, timeout=0.5)
    def hangs_in_a_thread(ctx: Any) -> None:
        time.sleep(3)  # a thread cannot be interrupted: it is abandoned, then ends

    @instance.job(queue=Q)
    async def raises_from_del(ctx: JobContext) -> int:
        junk = ExplodesOnDel()
        del junk
        return 1

    @instance.job(queue=Q)
    async def leaks_a_thread(ctx: JobContext) -> int:
        threading.Thread(target=release.wait, daemon=True, name="leaked").start()
        return 2

    @instance.job(queue=Q)
    async def returns_an_object(ctx: JobContext) -> Any:
        return object()

    @instance.job(queue=Q)
    async def fine(ctx: JobContext, n: int) -> int:
        return n

    try:
        yield instance
    finally:
        release.set()
        await instance.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # __del__
@pytest.mark.parametrize("hostile", ["sqlite", "redis"], indirect=True)
async def test_misbehaving_handlers_end_dead_with_a_reason_and_the_worker_keeps_serving(
    hostile: App,
) -> None:
    app = hostile
    queue = app.queue(Q)
    bad = {
        name: await queue.add(name, {})
        for name in (
            "hangs",
            "hangs_in_a_thread",
            "raises_from_del",
            "leaks_a_thread",
            "returns_an_object",
        )
    }
    good = await queue.add_bulk({"name": "fine", "data": {"n": n}} for n in range(30))
    worker = app.worker([Q], 4, handle_signals=False, idle_wait_s=0.05)
    task = asyncio.create_task(worker.run())
    try:
        for job in good:
            await job.wait_until_finished(timeout=20)
        records = {name: await job.refresh() for name, job in bad.items()}
        deadline = time.monotonic() + 20
        while any(r.state not in (JobState.COMPLETED, JobState.DEAD) for r in records.values()):
            assert time.monotonic() < deadline, {n: r.state for n, r in records.items()}
            await asyncio.sleep(0.1)
            records = {name: await job.refresh() for name, job in bad.items()}
        late = await queue.add("fine", {"n": 99})
        assert await late.wait_until_finished(timeout=10) == 99  # still serving
        assert not task.done()
    finally:
        worker.stop(now=True)
        await asyncio.wait_for(task, 30)

    summary = {
        n: (r.state.value, r.reason, [e.error_type for e in r.errors]) for n, r in records.items()
    }
    print(summary)
    assert records["hangs"].state is JobState.DEAD
    assert records["hangs"].errors[-1].error_type.endswith("JobTimeout")
    assert records["hangs_in_a_thread"].state is JobState.DEAD
    assert records["hangs_in_a_thread"].errors[-1].error_type.endswith("JobTimeout")
    assert records["raises_from_del"].state is JobState.COMPLETED
    assert records["leaks_a_thread"].state is JobState.COMPLETED
    assert records["returns_an_object"].state is JobState.DEAD
    assert "JSON" in records["returns_an_object"].errors[-1].message
    for record in records.values():
        assert record.state is JobState.COMPLETED or record.reason


async def test_a_handler_calling_os_exit_loses_no_job(cluster: Cluster, app: App) -> None:
    ids = await enqueue_effects(app, 60, sleep=0.02, exit_once=lambda n: n == 30)
    fast = {"concurrency": 2, "lease": 1.0, "stall_check": 0.2}
    first, second = cluster.spawn(**fast), cluster.spawn(**fast)
    await wait_for_rows(cluster.effects, 31, timeout=30)
    report = await settle_and_check(
        app, cluster, ids, faulted=[f"proc-{first.pid}", f"proc-{second.pid}"]
    )
    codes = sorted(w.proc.returncode for w in (first, second) if not w.alive())
    print(f"os._exit: exit codes {codes}; {report}")
    assert codes == [17] and report.completed == 60, (codes, report)
