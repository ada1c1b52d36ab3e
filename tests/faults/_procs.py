"""Helpers for fault tests: worker processes, the side-effect ledger, job accounting."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shigoto import App, JobRecord, JobState

from ._accounting import Report, check, ledger
from .worker_proc import EFFECTS_SCHEMA, QUEUE

SCRIPT = Path(__file__).with_name("worker_proc.py")


@dataclass
class WorkerProcess:
    """One ``worker_proc.py`` child; its output goes to a log file (never a full pipe)."""

    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    """Worker processes sharing one backend URL and one side-effect ledger."""

    url: str
    effects: Path
    logs: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def spawn(self, *, url: str | None = None, **options: Any) -> WorkerProcess:
        """Start a worker on the cluster's URL (or ``url``: the same backend through a
        proxy); ``options`` are ``worker_proc.py`` flags (``lease=1.0``...)."""
        url = url or self.url
        args = [sys.executable, str(SCRIPT), "--url", url, "--effects", str(self.effects)]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is not False:
                args += [flag, str(value)]
        log = self.logs / f"worker-{len(self.workers)}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT)
        handle.close()
        worker = WorkerProcess(proc, log)
        self.workers.append(worker)
        return worker

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def stop_all(self) -> None:
        """SIGTERM every live worker, then SIGKILL whatever is left after 15 s."""
        for worker in self.live():
            worker.terminate()
        deadline = time.monotonic() + 15
        for worker in self.workers:
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()

    def logs_text(self) -> str:
        return "\n".join(f"--- {w.log.name} (pid {w.pid})\n{w.output()}" for w in self.workers)


def make_cluster(tmp_path: Path, url: str | None = None) -> Cluster:
    """A cluster on ``url`` (default: a fresh SQLite file) with an empty ledger."""
    url = url or f"sqlite:///{tmp_path / 'jobs.db'}?poll=0.02"
    effects = tmp_path / "effects.db"
    conn = sqlite3.connect(effects)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(EFFECTS_SCHEMA)
    conn.close()
    logs = tmp_path / "logs"
    logs.mkdir()
    return Cluster(url, effects, logs)


def executions(effects: Path) -> list[tuple[str, int, int, str]]:
    """Every recorded execution: (job_id, attempt, pid, worker_id), in order."""
    conn = sqlite3.connect(effects, timeout=30)
    try:
        return conn.execute(
            "SELECT job_id, attempt, pid, worker_id FROM executions ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


def runs_per_job(effects: Path) -> Counter[str]:
    return Counter(row[0] for row in executions(effects))


async def enqueue_effects(app: App, count: int, **data: Any) -> list[str]:
    """Add ``count`` ``effect`` jobs in bulk; ``data`` may hold callables of ``n``."""
    items: Iterable[dict[str, Any]] = (
        {
            "name": "effect",
            "data": {"n": n, **{k: v(n) if callable(v) else v for k, v in data.items()}},
        }
        for n in range(count)
    )
    jobs = await app.queue(QUEUE).add_bulk(items)
    return [j.id for j in jobs]


async def all_records(app: App) -> dict[str, JobRecord]:
    """Every job of the fault queue, by id."""
    out: dict[str, JobRecord] = {}
    for state in JobState:
        offset = 0
        while True:
            page = await app.queue(QUEUE).jobs(state, offset=offset, limit=5000)
            out.update((r.id, r) for r in page)
            if len(page) < 5000:
                break
            offset += 5000
    return out


async def wait_until_settled(app: App, total: int, timeout: float) -> dict[str, int]:
    """Poll until ``total`` jobs are completed or dead; return the counts either way."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await app.queue(QUEUE).counts()
        if counts["completed"] + counts["dead"] + counts["cancelled"] >= total:
            return counts
        if time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.1)


async def wait_for_rows(
    effects: Path, n: int, timeout: float = 15
) -> list[tuple[str, int, int, str]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await asyncio.to_thread(executions, effects)
        if len(rows) >= n:
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} execution(s) not recorded within {timeout} s")
        await asyncio.sleep(0.05)


async def settle_and_check(
    app: App,
    cluster: Cluster,
    ids: list[str],
    *,
    timeout: float = 60,
    faulted: Iterable[str] = (),
    dead_reasons: Iterable[str] | None = None,
) -> Report:
    """Wait until every job is final, then run the accounting (``_accounting.check``)."""
    counts = await wait_until_settled(app, len(ids), timeout)
    records = await all_records(app)
    runs = await asyncio.to_thread(ledger, cluster.effects)
    try:
        return check(ids, records, runs, faulted=faulted, dead_reasons=dead_reasons)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncounts {counts}\n{cluster.logs_text()[-4000:]}") from None


async def assert_active_leased(app: App) -> int:
    """Mid-run invariant: every ``active`` job holds a lease (a token, a worker and an
    expiry); returns how many are active."""
    active = await app.queue(QUEUE).jobs(JobState.ACTIVE, limit=5000)
    bad = [r.id for r in active if r.lease_until_ms is None or r.worker_id is None]
    assert not bad, f"active without a lease: {bad[:5]}"
    return len(active)
