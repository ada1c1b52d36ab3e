"""``shigoto metrics`` / ``alerts`` / ``monitor`` / ``stats --watch`` as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shigoto import App

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "shigoto.cli.main"]

APP = "tests.e2e.metrics_app:app"


def shigoto(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHIGOTO_URL": url, "COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def add_jobs(url: str, *jobs: tuple[str, str, dict[str, Any]]) -> None:
    async def main() -> None:
        async with App(url) as app:
            for queue, job_id, spec in jobs:
                await app.queue(queue).add(
                    spec["name"], spec["data"], job_id=job_id, **spec.get("options", {})
                )

    asyncio.run(main())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'metrics.db'}?poll=0.05"


@pytest.fixture
def worked(url: str) -> str:
    """9 completed and 1 failed job on queue ``m``, run by a CLI worker."""
    add_jobs(
        url,
        *[("m", f"ok-{n}", {"name": "ok", "data": {}}) for n in range(9)],
        ("m", "fail-1", {"name": "fail", "data": {}, "options": {"attempts": 1}}),
    )
    proc = shigoto("worker", APP, "--burst", url=url)
    assert proc.returncode == 0, proc.stderr
    return url


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_once_reports_counts_counters_and_histograms(worked: str, tmp_path: Path) -> None:
    proc = shigoto("metrics", "--once", url=worked)
    assert proc.returncode == 0, proc.stderr
    got = samples(proc.stdout)
    assert got[("shigoto_jobs", (("queue", "m"), ("state", "completed")))] == 9
    assert got[("shigoto_jobs", (("queue", "m"), ("state", "dead")))] == 1
    assert got[("shigoto_jobs_completed_total", (("job", "ok"), ("queue", "m")))] == 9
    assert got[("shigoto_jobs_dead_total", (("job", "fail"), ("queue", "m")))] == 1
    count = ("shigoto_job_processing_seconds_count", (("job", "ok"), ("queue", "m")))
    assert got[count] == 9
    inf = ("shigoto_job_wait_seconds_bucket", (("job", "ok"), ("le", "+Inf"), ("queue", "m")))
    assert got[inf] == 9

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus')")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=proc.stdout, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_metrics_server_answers_on_its_port_and_stops_cleanly(
    worked: str, stop: signal.Signals
) -> None:
    """Ctrl-C, or a supervisor's SIGTERM, ends the server with status 0, also when it
    was started with SIGINT ignored (as a shell does for a job started with ``&``)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [*CLI, "--url", worked, "metrics", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        body = b""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain")
                    body = r.read()
                break
            except OSError:
                time.sleep(0.1)
        assert b'shigoto_jobs_completed_total{job="ok",queue="m"} 9.0' in body
    finally:
        server.send_signal(stop)
        try:
            assert server.wait(10) == 0, server.communicate()[1][-2000:]
        finally:
            server.kill()


def test_monitor_fires_and_alerts_lists_it(url: str) -> None:
    add_jobs(url, *[("m", f"j{n}", {"name": "ok", "data": {}}) for n in range(4)])
    monitor = subprocess.Popen(
        [*CLI, "--url", url, "monitor", APP, "--interval", "0.2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        data: dict[str, list[dict[str, object]]] = {}
        while time.monotonic() < deadline:
            proc = shigoto("alerts", APP, "--json", url=url)
            assert proc.returncode == 0, proc.stderr
            data = json.loads(proc.stdout)
            if data["history"]:
                break
            time.sleep(0.2)
    finally:
        monitor.send_signal(signal.SIGTERM)
        _, err = monitor.communicate(timeout=10)
    backlog = [r for r in data["rules"] if r["rule"] == "backlog"]
    assert backlog == [
        {"queue": "m", "rule": "backlog", "value": 4.0, "threshold": 3.0, "state": "firing",
         "since_ms": backlog[0]["since_ms"]}
    ]  # fmt: skip
    assert [(t["rule"], t["to_state"]) for t in data["history"]] == [("backlog", "firing")]
    assert "alert backlog on queue m firing" in err
    table = shigoto("alerts", APP, url=url)
    assert "firing" in table.stdout and "backlog" in table.stdout


def test_stats_shows_rates_and_watch_draws_a_frame(worked: str) -> None:
    proc = shigoto("stats", "--metrics", url=worked)
    assert proc.returncode == 0, proc.stderr
    assert "fail %" in proc.stdout and "10.0%" in proc.stdout
    # Per job name: the one failed job is dead now, and 100 % of its name failed.
    by_name = proc.stdout[proc.stdout.index("jobs by name") :]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in by_name.splitlines()]
    fail_row = next(cells for cells in rows if cells[1:2] == ["fail"])
    assert fail_row[:9] == ["m", "fail", "0", "0", "0", "1", "0", "1", "100.0%"]
    as_json = json.loads(shigoto("stats", "--json", url=worked).stdout)
    assert as_json["m"]["metrics"]["failure_rate"] == 0.1
    assert as_json["m"]["metrics"]["jobs"]["fail"]["dead"] == 1
    assert as_json["m"]["metrics"]["jobs"]["ok"]["completed"] == 9
    frame = shigoto("stats", "--watch", "--frames", "1", url=worked)
    assert frame.returncode == 0, frame.stderr
    assert "done/min" in frame.stdout and "10.0%" in frame.stdout


def test_worker_with_monitor_evaluates_the_rules_too(url: str) -> None:
    add_jobs(url, *[("m", f"j{n}", {"name": "ok", "data": {}}) for n in range(4)])

    async def pause() -> None:
        async with App(url) as app:
            await app.queue("m").pause()  # the backlog stays while the worker runs

    asyncio.run(pause())
    worker = subprocess.Popen(
        [*CLI, "--url", url, "worker", APP, "--with-monitor"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        history: list[dict[str, object]] = []
        while time.monotonic() < deadline and not history:
            time.sleep(0.3)
            history = json.loads(shigoto("alerts", "--json", url=url).stdout)["history"]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert [(t["rule"], t["queue"], t["to_state"]) for t in history] == [("backlog", "m", "firing")]
