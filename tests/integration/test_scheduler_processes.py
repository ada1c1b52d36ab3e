"""Three scheduler processes on one SQLite file fire each tick of a schedule exactly once.

No leader election: every scheduler tries every tick and the backend lets exactly one
claim it. The handler records the tick it ran for (``ctx.scheduled_at``) and its job is
removed as soon as it completes, so a tick fired twice would show up as a duplicate
line even though its job id is long gone. One scheduler is killed with SIGKILL part way
through: the others carry on without a gap.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUN_S = 20.0
"""How long the schedulers run (the issue asks for 20 s of an every-second schedule)."""
KILL_AT_S = 7.0

APP = textwrap.dedent(
    """
    import asyncio, os, sys

    from shigoto import App

    app = App(os.environ["TICK_URL"])

    @app.every(1, remove_on_complete=True)
    async def beat(ctx) -> None:
        with open(os.environ["TICK_LOG"], "a") as log:
            log.write(f"{int(ctx.scheduled_at.timestamp() * 1000)}\\n")

    async def main(role: str) -> None:
        if role == "scheduler":
            scheduler = app.scheduler()
            await scheduler.run()
            print(f"fired {scheduler.fired}", flush=True)
        else:
            await app.worker(concurrency=4, lease_s=10, idle_wait_s=0.05).run()
        await app.close()

    asyncio.run(main(sys.argv[1]))
    """
)


def spawn(role: str, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "tick_app.py"), role],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err[-3000:]
    return out, err


def test_three_schedulers_fire_every_tick_exactly_once_without_gaps(tmp_path: Path) -> None:
    (tmp_path / "tick_app.py").write_text(APP)
    log_path = tmp_path / "ticks.log"
    env = {
        **os.environ,
        "TICK_URL": f"sqlite:///{tmp_path / 'ticks.db'}?poll=0.05",
        "TICK_LOG": str(log_path),
    }
    worker = spawn("worker", tmp_path, env)
    schedulers = [spawn("scheduler", tmp_path, env) for _ in range(3)]
    started = time.monotonic()
    try:
        time.sleep(KILL_AT_S)
        victim = schedulers.pop()
        victim.kill()  # SIGKILL: no goodbye, no cleanup
        victim.communicate(timeout=10)
        time.sleep(max(0.0, RUN_S - (time.monotonic() - started)))
        outputs = [stop(s)[0] for s in schedulers]
        stopped = time.monotonic()
        time.sleep(1.5)  # let the worker drain the last ticks
        stop(worker)
    finally:
        for process in [worker, *schedulers]:
            if process.poll() is None:
                process.kill()
                process.communicate()

    ran = [int(line) for line in log_path.read_text().split()]
    assert len(ran) == len(set(ran)), f"duplicate ticks: {sorted(ran)}"
    ticks = sorted(ran)
    gaps = [(a, b) for a, b in itertools.pairwise(ticks) if b - a != 1000]
    assert not gaps, f"gaps between ticks: {gaps}"
    assert len(ticks) >= (stopped - started) - 3, (len(ticks), outputs)
    assert all(out.startswith("fired ") for out in outputs), outputs
