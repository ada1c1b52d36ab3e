"""``shigoto scheduler``, ``shigoto worker --with-scheduler`` and ``shigoto schedules``,
run as subprocesses against their own SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from shigoto import App

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "shigoto.cli.main"]
APP = "tests.e2e.schedule_app:app"


def env_for(url: str) -> dict[str, str]:
    return {**os.environ, "SHIGOTO_URL": url}


def shigoto(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=REPO, env=env_for(url), capture_output=True, text=True, timeout=60
    )


def run_for(seconds: float, *args: str, url: str) -> subprocess.CompletedProcess[str]:
    """Start a long-running command, stop it with SIGTERM after ``seconds``."""
    process = subprocess.Popen(
        [*CLI, *args],
        cwd=REPO,
        env=env_for(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(seconds)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def tick_results(url: str) -> list[str]:
    """The results of the completed tick jobs: the ticks they ran for."""

    async def main() -> list[str]:
        app = App(url)
        try:
            done = await app.queue("ticks").jobs("completed", limit=1000)
            return sorted(str(r.result_value) for r in done)
        finally:
            await app.close()

    return asyncio.run(main())


def test_schedules_lists_expression_zone_and_next_fires_in_zone_and_utc(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    proc = shigoto("schedules", APP, "--json", url=url)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in map(json.loads, proc.stdout.splitlines())}
    report = rows["daily-report"]
    assert (report["when"], report["tz"], report["misfire"]) == (
        "0 9 * * *",
        "Asia/Tokyo",
        "run_once",
    )
    assert len(report["next"]) == 3
    assert all(n["local"].endswith("09:00:00 JST") for n in report["next"])
    assert all(n["utc"].endswith("00:00:00 UTC") for n in report["next"])
    assert report["last"] is None
    assert rows["beat"]["when"] == "every 1s"


def test_a_worker_with_scheduler_fires_and_runs_ticks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}?poll=0.05"
    proc = run_for(3.5, "worker", APP, "--with-scheduler", url=url)
    assert proc.returncode == 0, proc.stderr
    assert "scheduler started" in proc.stderr

    ran = tick_results(url)
    assert len(ran) >= 2, proc.stderr
    assert all(datetime.fromisoformat(r).microsecond == 0 for r in ran)  # whole-second ticks

    listed = shigoto("schedules", APP, "--json", url=url)
    beat = next(r for r in map(json.loads, listed.stdout.splitlines()) if r["name"] == "beat")
    # The last tick may have fired just before SIGTERM, after the stopping worker's
    # last claim: then it waits for the next worker, which is right, not lost.
    last = beat["last"]
    assert last["job_id"].startswith("cron:beat:")
    assert last["state"] in ("completed", "waiting"), last


def test_the_scheduler_command_enqueues_ticks_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    proc = run_for(2.5, "scheduler", APP, url=url)
    assert proc.returncode == 0, proc.stderr
    assert "scheduler stopped" in proc.stderr
    counts = shigoto("stats", "--json", url=url)
    assert json.loads(counts.stdout)["ticks"]["waiting"] >= 1


def test_schedules_on_a_backend_file_that_does_not_exist_fails_cleanly(tmp_path: Path) -> None:
    proc = shigoto("schedules", url=f"sqlite:///{tmp_path / 'missing.db'}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "no SQLite database" in proc.stderr
