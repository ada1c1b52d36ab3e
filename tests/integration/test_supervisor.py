"""``shigoto worker APP --processes N``: a supervisor keeps N worker processes running.

The CLI tests run the real command as a subprocess on a SQLite file and read its log;
the restart policy itself is tested with a stand-in command that needs no app.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shigoto import App
from shigoto.job import JobState
from shigoto.supervisor import (
    RECYCLE_EXIT,
    Supervisor,
    SupervisorSettings,
    describe_exit,
    rss_bytes,
)

REPO = Path(__file__).resolve().parents[2]
APP = "tests.integration.workers_app:app"
STARTED = re.compile(r"worker process #(\d+) started \(pid (\d+)\)")


class Running:
    """A ``shigoto worker`` subprocess whose stderr is collected line by line."""

    def __init__(self, url: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SHIGOTO_URL"}
        env["SHIGOTO_URL"] = url
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shigoto.cli", "worker", APP, *args],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def started(self) -> list[tuple[int, int]]:
        """(slot, pid) of every worker process started so far."""
        return [(int(m[1]), int(m[2])) for m in STARTED.finditer(self.log)]

    def wait_for(self, pattern: str, timeout: float = 15.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log)) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{pattern!r} x{count} not seen; log:\n{self.log}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def running(url: str) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for item in started:
        if item.proc.poll() is None:
            item.proc.kill()
            item.proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_n_processes_share_the_work_and_a_killed_one_is_restarted(
    url: str, running: list[Running]
) -> None:
    app = App(url)
    try:
        sup = Running(url, "--processes", "2", "--concurrency", "2")
        running.append(sup)
        sup.wait_for(r"worker .* started: queues=\['procs'\]", count=2)
        children = {pid for _, pid in sup.started()}
        assert len(children) == 2 and sup.proc.pid not in children

        jobs = [await app.queue("procs").add("whoami", {"n": i}) for i in range(20)]
        pids = {await job.wait_until_finished(timeout=15) for job in jobs}
        assert pids <= children

        victim = sorted(children)[0]
        os.kill(victim, signal.SIGKILL)
        sup.wait_for(r"died \(signal 9 \(SIGKILL\)\).*restarting in 0\.5 s")
        sup.wait_for(r"worker process #\d started", count=3)
        replacement = {pid for _, pid in sup.started()} - children
        assert len(replacement) == 1
        sup.wait_for(r"worker .* started: queues=\['procs'\]", count=3)
        job = await app.queue("procs").add("whoami", {"n": 99})
        assert await job.wait_until_finished(timeout=15) in children - {victim} | replacement

        assert sup.terminate() == 0
        for pid in (children - {victim}) | replacement:
            assert not _alive(pid)
        assert "supervisor" in sup.log and "stopped: 1 restart(s)" in sup.log
    finally:
        await app.close()


async def test_sigterm_is_forwarded_and_running_jobs_finish(
    url: str, running: list[Running]
) -> None:
    app = App(url)
    try:
        sup = Running(url, "--processes", "2")
        running.append(sup)
        sup.wait_for(r"worker .* started: queues=\['procs'\]", count=2)
        job = await app.queue("procs").add("linger", {"seconds": 1.0})
        for _ in range(200):
            if await job.state() == JobState.ACTIVE:
                break
            time.sleep(0.02)
        assert sup.terminate() == 0
        assert await job.state() == JobState.COMPLETED
        assert "SIGTERM received, stopping worker processes gracefully" in sup.log
        assert "stopped: 0 restart(s)" in sup.log
    finally:
        await app.close()


async def test_a_process_is_recycled_after_max_jobs(url: str, running: list[Running]) -> None:
    app = App(url)
    try:
        jobs = [await app.queue("procs").add("whoami", {"n": i}) for i in range(6)]
        sup = Running(
            url, "--max-jobs-per-process", "3", "--concurrency", "1", "--burst", "--lease", "5"
        )
        running.append(sup)
        assert sup.proc.wait(timeout=30) == 0
        sup._reader.join(timeout=5)
        assert "stopping to be recycled" in sup.log
        assert "recycled; starting a fresh one" in sup.log
        pids = [await job.wait_until_finished(timeout=5) for job in jobs]
        assert len(set(pids)) == 2, sup.log  # 3 jobs each, then a fresh process
    finally:
        await app.close()


async def test_a_process_over_max_memory_is_recycled(url: str, running: list[Running]) -> None:
    sup = Running(url, "--max-memory", "1")  # 1 MiB: any Python process is over it
    running.append(sup)
    sup.wait_for(r"uses [\d.]+ MiB \(limit 1\.0 MiB\); recycling it")
    sup.wait_for(r"recycled; starting a fresh one")
    sup.wait_for(r"worker process #0 started", count=2)
    assert sup.terminate() == 0


def test_workers_stop_when_the_supervisor_is_killed(url: str, running: list[Running]) -> None:
    sup = Running(url, "--processes", "2")
    running.append(sup)
    sup.wait_for(r"worker .* started: queues=\['procs'\]", count=2)
    children = [pid for _, pid in sup.started()]
    sup.proc.kill()  # kill -9: no chance to forward anything
    sup.proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    sup._reader.join(timeout=5)
    assert not any(_alive(pid) for pid in children)
    assert sup.log.count("supervisor is gone; stopping gracefully") == 2


# -- the restart policy, with a stand-in command ------------------------------------------


def _supervise(code: str, **settings: float) -> tuple[Supervisor, threading.Thread]:
    sup = Supervisor(
        lambda slot: [sys.executable, "-c", code],
        SupervisorSettings(processes=2, handle_signals=False, **settings),  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    return sup, thread


def test_a_crashing_process_is_restarted_with_growing_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shigoto.supervisor")
    sup, thread = _supervise(
        "import sys; sys.exit(3)", backoff_initial_s=0.05, backoff_max_s=0.2, poll_s=0.01
    )
    deadline = time.monotonic() + 10
    while sup.restarts < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    sup.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert sup.restarts >= 8
    delays = re.findall(r"exit code 3\) after [\d.]+ s; restarting in ([\d.]+) s", caplog.text)
    assert {"0.1", "0.2"} <= set(delays)  # 0.05 doubles, then is capped at 0.2
    assert max(float(d) for d in delays) == pytest.approx(0.2)


def test_recycle_exit_restarts_at_once_and_exit_zero_is_final() -> None:
    sup, thread = _supervise("import sys; sys.exit(0)")
    thread.join(timeout=10)
    assert not thread.is_alive() and sup.restarts == 0
    sup, thread = _supervise(f"import sys; sys.exit({RECYCLE_EXIT})", poll_s=0.01)
    deadline = time.monotonic() + 10
    while sup.recycled < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    sup.stop()
    thread.join(timeout=10)
    assert sup.recycled >= 4 and all(s.failures == 0 for s in sup.slots)


def test_helpers() -> None:
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-11) == "signal 11 (SIGSEGV)"
    rss = rss_bytes(os.getpid())
    assert rss is None or rss > 1_000_000
    assert rss_bytes(2**22 + 12345) is None
