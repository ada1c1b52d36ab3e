"""``shigoto jobs remove`` and ``shigoto jobs promote``, run as a user runs them: the
outcome, clean refusals, and the audit trail naming ``--actor``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shigoto import App

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "shigoto.cli.main"]


def shigoto(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SHIGOTO_URL", "SHIGOTO_ACTOR")}
    env["SHIGOTO_URL"] = url
    return subprocess.run(
        [*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def refused(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output, output
    for needle in needles:
        assert needle in output, output


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'admin.db'}"

    async def main() -> None:
        app = App(url)
        try:
            queue = app.queue("ops")
            await queue.add("report", {}, job_id="now")
            await queue.add("report", {}, job_id="later", delay=3600)
            await queue.add("report", {}, job_id="running")
            backend = await app.backend()
            # "now" was added first: claim it, then give "running" the lease instead
            await backend.remove("ops", "now", now_ms=app.clock.now_ms())
            [claimed] = await backend.claim(
                "ops", limit=1, worker_id="w", lease_ms=600_000, now_ms=app.clock.now_ms()
            )
            assert claimed.record.id == "running"
            await queue.add("report", {}, job_id="now")
        finally:
            await app.close()

    asyncio.run(main())
    return url


def states(url: str) -> dict[str, str]:
    listed = shigoto("jobs", "list", "-q", "ops", "--json", url=url)
    assert listed.returncode == 0, listed.stderr
    return {row["id"]: row["state"] for row in map(json.loads, listed.stdout.splitlines())}


def test_promote_then_remove_and_the_trail_names_the_actor(url: str) -> None:
    promoted = shigoto("--actor", "ops-team", "jobs", "promote", "later", "-q", "ops", url=url)
    assert promoted.returncode == 0, promoted.stderr
    assert "promoted job later" in promoted.stdout
    assert states(url)["later"] == "waiting"

    removed = shigoto("--actor", "ops-team", "jobs", "remove", "later", url=url)  # any queue
    assert removed.returncode == 0, removed.stderr
    assert "removed job later (waiting)" in removed.stdout
    assert "later" not in states(url)

    trail = shigoto("audit", "--actor", "ops-team", "--json", url=url)
    entries = [json.loads(line) for line in trail.stdout.splitlines()]
    assert [(e["action"], e["job_id"]) for e in reversed(entries)] == [
        ("promote", "later"),
        ("remove", "later"),
    ]


def test_refusals_are_one_clear_line(url: str) -> None:
    refused(shigoto("jobs", "promote", "now", "-q", "ops", url=url), "waiting, not delayed")
    refused(shigoto("jobs", "remove", "running", "-q", "ops", url=url), "active", "cancel it")
    refused(shigoto("jobs", "remove", "ghost", "-q", "ops", url=url), "no job with id 'ghost'")
    refused(shigoto("jobs", "promote", "ghost", url=url), "no job with id 'ghost'")
    assert states(url) == {"now": "waiting", "later": "delayed", "running": "active"}
