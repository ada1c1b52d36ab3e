"""``shigoto dlq`` as an operator runs it: a subprocess against a SQLite file with dead
jobs of two causes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shigoto import App, JobContext, UnrecoverableError
from shigoto.testing import run_until_empty

REPO = Path(__file__).resolve().parents[2]


def shigoto(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHIGOTO_URL"}
    env["SHIGOTO_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "shigoto.cli.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_clean_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    for needle in needles:
        assert needle in output, output


@pytest.fixture
def dead(tmp_path: Path) -> str:
    """Five dead jobs in queue 'ops': 3 of 'user N not found', 2 card declines."""
    url = f"sqlite:///{tmp_path / 'dlq.db'}?poll=0.05"

    async def main() -> None:
        app = App(url)

        @app.job(queue="ops", attempts=1)
        async def sync_user(ctx: JobContext, user_id: int) -> None:
            raise LookupError(f"user {user_id} not found")

        @app.job(queue="ops", attempts=1)
        async def bill(ctx: JobContext, order_id: int) -> None:
            raise UnrecoverableError(f"card declined for order {order_id}")

        try:
            for n in range(3):
                await sync_user.enqueue(user_id=n, job_id=f"user-{n}")
            for n in range(2):
                await bill.enqueue(order_id=n, job_id=f"bill-{n}")
            await run_until_empty(app, "ops", handle_signals=False)
        finally:
            await app.close()

    asyncio.run(main())
    return url


def fingerprints(url: str) -> dict[str, str]:
    proc = shigoto("dlq", "stats", "--json", url=url)
    assert proc.returncode == 0, proc.stderr
    [report] = json.loads(proc.stdout)
    return {g["error_type"].rsplit(".", 1)[-1]: g["fingerprint"] for g in report["groups"]}


def test_list_shows_dead_jobs_with_filters(dead: str) -> None:
    proc = shigoto("dlq", "list", url=dead)
    assert proc.returncode == 0, proc.stderr
    for job_id in ("user-0", "user-2", "bill-1"):
        assert job_id in proc.stdout
    assert "LookupError: user 2 not found" in proc.stdout

    only = shigoto("dlq", "list", "--reason", "unrecoverable", "--json", url=dead)
    rows = [json.loads(line) for line in only.stdout.splitlines()]
    assert {r["id"] for r in rows} == {"bill-0", "bill-1"}
    assert all(len(r["fingerprint"]) == 12 for r in rows)


def test_list_pages_with_a_cursor(dead: str) -> None:
    first = shigoto("dlq", "list", "-q", "ops", "-n", "2", url=dead)
    assert first.returncode == 0, first.stderr
    match = re.search(r"--cursor (\S+)", first.stdout)
    assert match, first.stdout
    second = shigoto(
        "dlq", "list", "-q", "ops", "-n", "10", "--cursor", match[1], "--json", url=dead
    )
    assert len(second.stdout.splitlines()) == 3


def test_stats_groups_by_cause(dead: str) -> None:
    proc = shigoto("dlq", "stats", url=dead)
    assert proc.returncode == 0, proc.stderr
    assert "2 cause(s)" in proc.stdout
    prints = fingerprints(dead)
    assert set(prints) == {"LookupError", "UnrecoverableError"}
    for fp in prints.values():
        assert fp in proc.stdout
    as_json = json.loads(shigoto("dlq", "stats", "--json", url=dead).stdout)
    groups = {g["message"]: g for g in as_json[0]["groups"]}
    assert groups["user <n> not found"]["count"] == 3
    assert groups["card declined for order <n>"]["job_names"] == ["bill"]
    assert groups["user <n> not found"]["frame"].endswith("test_cli_dlq.py:sync_user")


def test_show_a_job_or_a_group(dead: str) -> None:
    job = shigoto("dlq", "show", "user-1", url=dead)
    assert job.returncode == 0, job.stderr
    assert "user 1 not found" in job.stdout and "Traceback" in job.stdout

    fp = fingerprints(dead)["LookupError"]
    group = shigoto("dlq", "show", fp[:6], url=dead)
    assert group.returncode == 0, group.stderr
    assert f"error group {fp}" in group.stdout
    assert "sync_user" in group.stdout and "newest traceback" in group.stdout

    assert_clean_failure(shigoto("dlq", "show", "nope", url=dead), "nope")


def test_redrive_a_group_after_a_dry_run_and_the_history_names_who(dead: str) -> None:
    fp = fingerprints(dead)["LookupError"]
    dry = shigoto("dlq", "redrive", "--fingerprint", fp, "--dry-run", url=dead)
    assert dry.returncode == 0, dry.stderr
    assert "3 dead job(s) would be redriven" in dry.stdout
    assert "user-0" in dry.stdout

    proc = shigoto("dlq", "redrive", "--fingerprint", fp, "--rate", "100/s", url=dead)
    assert proc.returncode == 0, proc.stderr
    assert "redrove 3 job(s) of queue 'ops'" in proc.stdout
    assert "staggered at 100/s" in proc.stdout

    left = shigoto("dlq", "list", "--json", url=dead)
    assert {json.loads(line)["id"] for line in left.stdout.splitlines()} == {"bill-0", "bill-1"}
    shown = shigoto("jobs", "show", "user-0", "--json", url=dead)
    errors = json.loads(shown.stdout)["errors"]
    assert errors[-1]["error_type"] == "Redriven"
    assert re.match(r"Redriven by \S+@\S+ \(fingerprint=", errors[-1]["message"])


def test_redrive_needs_one_way_of_choosing(dead: str) -> None:
    assert_clean_failure(shigoto("dlq", "redrive", url=dead), "exactly one way")
    assert_clean_failure(shigoto("dlq", "redrive", "--reason", "bored", url=dead), "bored")
    assert_clean_failure(shigoto("dlq", "redrive", "--all", "--rate", "lots", url=dead), "rate")


def test_redrive_by_id_and_all(dead: str) -> None:
    one = shigoto("dlq", "redrive", "bill-0", url=dead)
    assert "redrove 1 job(s)" in one.stdout, one.stdout + one.stderr
    rest = shigoto("dlq", "redrive", "--all", url=dead)
    assert "redrove 4 job(s)" in rest.stdout, rest.stdout + rest.stderr


def test_purge_asks_for_yes_and_honours_age(dead: str) -> None:
    refused = shigoto("dlq", "purge", "--all", url=dead)
    assert_clean_failure(refused, "--yes")

    young = shigoto("dlq", "purge", "--older-than", "1d", "--yes", url=dead)
    assert "nothing deleted" in young.stdout, young.stdout + young.stderr

    dry = shigoto("dlq", "purge", "--name", "bill", "--dry-run", url=dead)
    assert "2 dead job(s) would be deleted" in dry.stdout, dry.stdout + dry.stderr
    gone = shigoto("dlq", "purge", "--name", "bill", "--yes", url=dead)
    assert "deleted 2 dead job(s) of queue 'ops'" in gone.stdout, gone.stdout + gone.stderr
    left = shigoto("dlq", "list", "--json", url=dead)
    assert len(left.stdout.splitlines()) == 3
