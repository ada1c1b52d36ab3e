"""``shigoto enqueue`` (one job, ``--bulk`` JSON lines, ``--chunks``) and ``shigoto batches``
as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "shigoto.cli.main"]


def shigoto(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHIGOTO_URL": url, "COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_bulk_enqueue_chunks_list_show_and_cancel(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "".join(json.dumps({"name": "ping", "data": {"i": i}}) + "\n" for i in range(2500))
    )
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"row": i}) + "\n" for i in range(250)))

    done = shigoto("enqueue", "--bulk", str(jobs), "-q", "mail", url=url)
    assert done.returncode == 0, done.stderr
    assert "2,500 jobs enqueued on queue mail" in done.stdout

    done = shigoto(
        "enqueue", "--bulk", str(rows), "--chunks", "import_rows", "--on-complete", "notify",
        "-q", "imports", url=url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "250 items in 3 chunks on queue imports" in done.stdout

    listed = shigoto("batches", "--json", url=url)
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["queue"], row["name"], row["total_chunks"], row["status"]) == (
        "imports", "import_rows", 3, "running",
    )  # fmt: skip
    table = shigoto("batches", url=url)
    assert row["id"] in table.stdout and "running" in table.stdout

    shown = shigoto("batches", "show", row["id"], "-q", "imports", "--json", url=url)
    assert json.loads(shown.stdout)["progress"] == 0.0

    cancelled = shigoto("batches", "cancel", row["id"], "-q", "imports", url=url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled; 3 chunk(s) cancelled" in cancelled.stdout

    one = shigoto("enqueue", "ping", "-d", '{"i": 1}', "-q", "mail", url=url)
    assert one.returncode == 0 and len(one.stdout.strip()) == 24


def test_a_bad_bulk_line_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "ping"}\n\n{"data": {}}\n')
    done = shigoto("enqueue", "--bulk", str(bad), url=url)
    assert done.returncode == 1
    assert 'line 3: expected an object with a "name"' in done.stderr
    missing = shigoto("batches", "show", "batch-nope", url=url)
    assert missing.returncode == 1 and "no batch batch-nope" in missing.stderr
