"""Three worker processes share one rate limit, because the backend enforces it.

A limit counted in each worker would let three processes run three times the rate; the
limit lives in the claim script instead, so 100/s over 10 s gives 1000 jobs (± 2 %),
not 3000. The second test gives two tenants 10x different load, the noisy one
enqueued first: each gets its own group rate, and the quiet one is not starved behind
the noisy one's backlog.

Each handler appends "tenant claim-time pid" to a log shared by the processes (the
claim time is the ``now`` the backend counted the job at); the windows are measured
from the first claim, after all three workers are up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REDIS_HOST, REDIS_PORT, require_server, shared_redis_url
from shigoto import App

pytestmark = pytest.mark.slow

APP = textwrap.dedent(
    """
    import asyncio, os, sys, time

    from shigoto import App

    app = App(os.environ["RL_URL"])

    @app.job(queue="rl", remove_on_complete=True, rate_limit_key=lambda d: d["tenant"])
    async def call(ctx, tenant: str, n: int) -> None:
        with open(os.environ["RL_LOG"], "a") as log:
            log.write(f"{tenant} {ctx.job.started_ms / 1000:.3f} {os.getpid()}\\n")

    async def main() -> None:
        await app.backend()
        print("ready", flush=True)
        await app.worker(["rl"], concurrency=10).run()
        await app.close()

    asyncio.run(main())
    """
)


def _spawn(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "rl_app.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Workers:
    """Three worker processes on one URL, started together and stopped with SIGTERM."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        (tmp_path / "rl_app.py").write_text(APP)
        self.log = tmp_path / "starts.log"
        env = {**os.environ, "RL_URL": url, "RL_LOG": str(self.log)}
        self.processes = [_spawn(tmp_path, env) for _ in range(3)]

    def wait_ready(self) -> None:
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if line.strip() != "ready":
                process.kill()
                raise AssertionError(f"worker did not start: {process.communicate()[1][-3000:]}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                _, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise
            assert process.returncode == 0, err[-3000:]

    def starts(self) -> list[tuple[str, float, int]]:
        if not self.log.exists():
            return []
        rows = [line.split() for line in self.log.read_text().splitlines() if line]
        return sorted(((t, float(at), int(pid)) for t, at, pid in rows), key=lambda r: r[1])

    def wait_first_start(self, timeout_s: float = 10.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            starts = self.starts()
            if starts:
                return starts[0][1]
            time.sleep(0.01)
        raise AssertionError("no job started")


async def _prepare(url: str, jobs: list[tuple[str, int]], **limits: object) -> None:
    app = App(url)
    try:
        queue = app.queue("rl")
        await queue.set_limits(**limits)  # type: ignore[arg-type]
        await queue.add_bulk(
            {"name": "call", "data": {"tenant": t, "n": n}, "group": t} for t, n in jobs
        )
    finally:
        await app.close()


@pytest.fixture
def url() -> str:
    """The shared Redis (the multi-host backend) under a fresh prefix."""
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    return shared_redis_url("rate")


def test_three_processes_share_one_rate_of_100_per_second(tmp_path: Path, url: str) -> None:
    workers = Workers(tmp_path, url)
    try:
        workers.wait_ready()
        asyncio.run(_prepare(url, [("all", n) for n in range(2000)], rate_limit="100/s"))
        first = workers.wait_first_start()
        time.sleep(max(0.0, first + 10.3 - time.time()))
    finally:
        workers.stop()

    starts = workers.starts()
    in_window = [s for s in starts if s[1] < first + 10.0]
    print(f"100/s over 10 s with 3 processes: {len(in_window)} jobs")
    assert 980 <= len(in_window) <= 1020, len(in_window)
    assert len({pid for _, _, pid in in_window}) == 3  # all three processes took part
    # and no sliding second ever held more than 100 claims. These are handler start
    # times, which trail the claims by a few ms that vary per process (and per job), so
    # allow 50 ms of that jitter: three workers each using their own 100/s would put
    # 101 starts within about 0.33 s.
    times = [at for _, at, _ in starts]
    assert all(b - a >= 0.95 for a, b in zip(times, times[100:], strict=False))


def test_two_tenants_with_10x_different_load_each_get_their_share(tmp_path: Path, url: str) -> None:
    noisy = [("noisy", n) for n in range(500)]
    quiet = [("quiet", n) for n in range(50)]
    workers = Workers(tmp_path, url)
    try:
        workers.wait_ready()
        # the noisy tenant's whole backlog is enqueued first: the quiet one waits behind it
        asyncio.run(_prepare(url, noisy + quiet, group_rate_limit="20/s"))
        first = workers.wait_first_start()
        time.sleep(max(0.0, first + 5.2 - time.time()))
    finally:
        workers.stop()

    starts = [s for s in workers.starts() if s[1] < first + 5.0]
    counts = Counter(tenant for tenant, _, _ in starts)
    print(f"20/s per tenant over 5 s: {dict(counts)}")
    # each tenant at its own 20/s: the noisy one is held to it...
    assert 98 <= counts["noisy"] <= 102, counts
    # ...and the quiet one gets its whole share (50 jobs = 2.5 s at 20/s) at once
    quiet_starts = [at - first for tenant, at, _ in starts if tenant == "quiet"]
    assert len(quiet_starts) == 50, counts
    assert max(quiet_starts) < 3.0, quiet_starts
