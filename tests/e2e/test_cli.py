"""The ``shigoto`` command line, run as a user runs it: a subprocess, output read as text.

Each test gets its own SQLite file; the worker imports ``tests.e2e.sample_app:app``
from the repository root, as ``shigoto worker`` would from a project root.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shigoto import App

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "shigoto.cli.main"]


def shigoto(
    *args: str, url: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHIGOTO_URL"}
    if url is not None:
        env["SHIGOTO_URL"] = url
    return subprocess.run(
        [*CLI, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_clean_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Non-zero exit, every needle in the message, and no Python traceback."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    for needle in needles:
        assert needle in output, output


def add_jobs(url: str, *jobs: tuple[str, str, dict[str, Any]]) -> None:
    """Enqueue ``(queue, job_id, {"name":..., "data":...})`` items as a producer would."""

    async def main() -> None:
        app = App(url)
        try:
            for queue, job_id, spec in jobs:
                await app.queue(queue).add(spec["name"], spec["data"], job_id=job_id)
        finally:
            await app.close()

    asyncio.run(main())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'e2e.db'}?poll=0.05"


@pytest.fixture
def processed(url: str) -> str:
    """A database where a burst worker ran a completed, a sync and a dead job."""
    add_jobs(
        url,
        ("e2e", "sum", {"name": "add", "data": {"a": 2, "b": 3}}),
        ("e2e", "loud", {"name": "shout", "data": {"text": "hi"}}),
        ("e2e", "bad-order", {"name": "reject", "data": {"order_id": 7}}),
    )
    proc = shigoto("worker", "tests.e2e.sample_app:app", "-q", "e2e", "-c", "2", "--burst", url=url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return url


@pytest.mark.slow
def test_demo_plays_every_scenario_and_ends_with_the_expected_states() -> None:
    started = time.monotonic()
    proc = shigoto("demo", timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert elapsed < 60
    out = proc.stdout
    assert "demo finished" in out
    for heading in ("Immediate job", "Delayed job", "Priorities", "Long job", "Retries"):
        assert heading in out
    assert "ran in this order: password-reset -> newsletter" in out
    assert "heartbeat: lease renewed" in out
    assert "retry in 0.50 s" in out and "retry in 1.00 s" in out
    assert "created=False" in out

    def row(job_id: str) -> str:
        [line] = [line for line in out.splitlines() if f" {job_id} " in line and "│" in line]
        return line

    assert re.search(r"completed\s+│\s+1/3", row("welcome:42"))
    assert "completed" in row("reminder:42")
    assert "completed" in row("import:users-2024-05")
    assert re.search(r"completed\s+│\s+3/3", row("invoice:1001"))
    assert re.search(r"dead\s+│\s+1/3", row("charge:1002"))
    assert "UnrecoverableError" in row("charge:1002")


def test_a_burst_worker_runs_the_jobs_and_exits(processed: str) -> None:
    async def states() -> dict[str, tuple[str, Any]]:
        app = App(processed)
        try:
            out = {}
            for job_id in ("sum", "loud", "bad-order"):
                job = await app.queue("e2e").get_job(job_id)
                assert job is not None and job.record is not None
                out[job_id] = (job.record.state.value, job.record.result_value)
            return out
        finally:
            await app.close()

    assert asyncio.run(states()) == {
        "sum": ("completed", 5),
        "loud": ("completed", "HI"),
        "bad-order": ("dead", None),
    }


def test_jobs_list_shows_the_dead_letter_queue(processed: str) -> None:
    proc = shigoto("jobs", "list", "--state", "dead", url=processed)
    assert proc.returncode == 0, proc.stderr
    assert "bad-order" in proc.stdout and "reject" in proc.stdout
    assert " loud " not in proc.stdout and " sum " not in proc.stdout

    proc = shigoto("jobs", "list", "--queue", "e2e", "--json", url=processed)
    assert proc.returncode == 0, proc.stderr
    listed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {item["id"]: item["state"] for item in listed} == {
        "sum": "completed",
        "loud": "completed",
        "bad-order": "dead",
    }


def test_jobs_show_gives_data_state_and_the_error_with_its_traceback(processed: str) -> None:
    proc = shigoto("jobs", "show", "bad-order", url=processed)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in (
        "bad-order",
        "dead",
        "unrecoverable",
        '"order_id": 7',
        "attempt 1",
        "UnrecoverableError",
        "order 7 violates a business rule",
        "Traceback (most recent call last)",
    ):
        assert needle in out, needle

    proc = shigoto("jobs", "show", "sum", "--queue", "e2e", "--json", url=processed)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["state"] == "completed"
    assert shown["result"] == 5
    assert shown["data"] == {"a": 2, "b": 3}


def test_stats_counts_every_state_per_queue(processed: str) -> None:
    proc = shigoto("stats", url=processed)
    assert proc.returncode == 0, proc.stderr
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("│ e2e")]
    cells = [cell.strip() for cell in line.strip("│ ").split("│")]
    # queue, waiting, delayed, active, completed, dead, cancelled, total, paused
    assert cells == ["e2e", "0", "0", "0", "2", "1", "0", "3", "no"]

    proc = shigoto("--url", processed, "stats", "--json")
    assert json.loads(proc.stdout)["e2e"]["dead"] == 1


def test_sigterm_stops_the_worker_gracefully_and_loses_no_job(url: str) -> None:
    add_jobs(url, ("slow", "nap", {"name": "nap", "data": {"seconds": 30}}))
    env = {**os.environ, "SHIGOTO_URL": url}
    worker = subprocess.Popen(
        [*CLI, "worker", "tests.e2e.sample_app:app", "-q", "slow", "--grace", "0.5"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while (
            json.loads(shigoto("jobs", "show", "nap", "--json", url=url).stdout)["state"]
            != "active"
        ):
            assert time.monotonic() < deadline, "the worker never started the job"
            time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, stderr
    assert "SIGTERM" in stderr and "releasing 1 unfinished job" in stderr
    shown = json.loads(shigoto("jobs", "show", "nap", "--json", url=url).stdout)
    assert shown["state"] == "waiting"
    assert shown["attempts"] == 0  # released, the interrupted attempt not counted


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--url", "foo://nowhere", "stats"], ["unknown backend URL scheme 'foo'"]),
        (["stats", "--url", "not a url"], ["backend URL must look like"]),
        (
            ["worker", "nonexistent.module:app"],
            ["cannot import module 'nonexistent.module'", "no module named 'nonexistent'"],
        ),
        (["worker", "tests.e2e.sample_app:nothing"], ["has no attribute 'nothing'"]),
        (["worker", "tests.e2e.sample_app:add"], ["is a JobHandler, not a shigoto App"]),
        (["worker", "not-a-module"], ["is not of the form module:attribute"]),
        (["jobs", "list", "--state", "sleeping"], ["Invalid value for '-s' / '--state'"]),
    ],
)
def test_bad_input_fails_with_a_clear_message(
    url: str, args: list[str], needles: list[str]
) -> None:
    assert_clean_failure(shigoto(*args, url=url), *needles)


def test_an_unknown_job_id_or_database_is_reported_not_created(
    processed: str, tmp_path: Path
) -> None:
    assert_clean_failure(
        shigoto("jobs", "show", "no-such-job", url=processed), "no job with id 'no-such-job'"
    )
    missing = tmp_path / "typo.db"
    assert_clean_failure(
        shigoto("stats", url=f"sqlite:///{missing}"), "no SQLite database at", str(missing)
    )
    assert not missing.exists()
