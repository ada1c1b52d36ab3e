"""bench/compare.py runs end to end: shigoto only (the peers' venv is not there in CI),
on a tiny backlog, against the local Redis (and, ``--amqp``, the local RabbitMQ), and
prints its tables (issue 14)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REDIS_HOST, REDIS_PORT, amqp_test_url, require_server

COMPARE = Path(__file__).resolve().parents[2] / "bench" / "compare.py"

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def test_compare_prints_the_table_for_shigoto() -> None:
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    command = [sys.executable, str(COMPARE), "--only", "shigoto", "--jobs", "200"]
    command += ["--rounds", "1", "--probes", "50", "--idle-samples", "3", "--timeout", "60"]
    command += ["--python", sys.executable, "--redis", f"redis://{REDIS_HOST}:{REDIS_PORT}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr
    assert "Redis: medians of 1 round(s), 200 jobs" in done.stdout
    row = next(line for line in done.stdout.splitlines() if "│ shigoto" in line)
    assert "error" not in row
    assert "queue.add_bulk" in row
    assert "reproduce  python bench/compare.py" in done.stdout
    assert "round 1/1 shigoto" in done.stderr


def test_compare_amqp_prints_the_table_for_shigoto_and_shigoto_bare() -> None:
    # Skips (or fails under SHIGOTO_REQUIRE_SERVERS=1) like the other amqp tests.
    broker = amqp_test_url().split("?")[0]  # the broker and vhost; compare.py adds a prefix
    command = [sys.executable, str(COMPARE), "--amqp", "--only", "shigoto,shigoto-bare"]
    command += ["--jobs", "200", "--rounds", "1", "--probes", "50", "--idle-samples", "3"]
    command += ["--timeout", "60", "--python", sys.executable, "--amqp-url", broker]
    command += ["--redis", f"redis://{REDIS_HOST}:{REDIS_PORT}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr
    assert "RabbitMQ: medians of 1 round(s), 200 jobs" in done.stdout
    for library in ("shigoto", "shigoto-bare"):
        row = next(line for line in done.stdout.splitlines() if f"│ {library} " in line)
        assert "error" not in row
        assert "queue.add_bulk" in row
        assert f"round 1/1 {library}" in done.stderr
    assert "reproduce  python bench/compare.py" in done.stdout
    assert "--amqp" in done.stdout
