"""Every benchmark script in bench/ runs once, end to end, on a tiny N (issue 14:
benchmarks are not timed tests; this only proves each one works). They run on a SQLite
file of their own, so no server is needed, but for the RabbitMQ floor."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from conftest import (
    REDIS_HOST,
    REDIS_PORT,
    REQUIRE_SERVERS,
    amqp_test_url,
    require_server,
    shared_redis_url,
)

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [pytest.mark.slow]

SCRIPTS = {
    # script: (arguments after --url, a line its output must contain)
    "throughput.py": (["--jobs", "300", "--concurrency", "10"], "jobs/s"),
    "latency.py": (["--jobs", "5", "--idle-jobs", "2", "--idle-gap-ms", "50"], "idle pickup"),
    "features.py": (["--jobs", "200", "--rounds", "1"], "cost of the features"),
    "delayed.py": (["--jobs", "3", "--max-delay-ms", "60"], "lateness p50"),
    "adds.py": (["--jobs", "200", "--tasks", "4"], "adds/s"),
    "batches.py": (["--items", "500", "--chunk-size", "100"], "items_per_s"),
    "security.py": (["--jobs", "200", "--rounds", "1"], "jobs/s"),
    "metrics_overhead.py": (["--jobs", "200", "--pairs", "1", "--flushes", "5"], "per flush"),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_the_benchmark_runs_on_a_tiny_n(script: str, tmp_path: Path) -> None:
    arguments, expected = SCRIPTS[script]
    command = [sys.executable, str(BENCH / script), "--url", f"sqlite:///{tmp_path}/b.db"]
    done = subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout, done.stdout[-2000:]


@pytest.mark.servers
def test_throughput_on_redis_reports_the_servers_cpu_per_job_and_what_the_cores_allow() -> None:
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    server = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    before = server.config_get("slowlog-*")
    command = [sys.executable, str(BENCH / "throughput.py"), "--url", shared_redis_url("bench")]
    arguments = ["--jobs", "200", "--concurrency", "10", "--work-us", "20", "--remove-on-complete"]
    arguments.append("--script-times")
    done = subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Redis CPU" in done.stdout and "jobs/s at these costs" in done.stdout, done.stdout
    assert "--work-us 20" in done.stdout  # the reproduce line keeps it
    # what each script cost, from the slow log, whose settings are given back after
    assert re.search(r"claim\.lua +\d+ calls .* µs/job", done.stdout), done.stdout
    assert server.config_get("slowlog-*") == before


@pytest.mark.servers
def test_latency_on_redis_also_measures_the_bare_list_floor_and_the_distance_to_it() -> None:
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    command = [sys.executable, str(BENCH / "latency.py"), "--url", shared_redis_url("bench")]
    arguments = ["--jobs", "5", "--idle-jobs", "2", "--idle-gap-ms", "50"]
    done = subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "floor, load  n=5" in done.stdout and "floor, idle  n=2" in done.stdout, done.stdout
    assert "ms above the floor" in done.stdout, done.stdout


@pytest.mark.servers
def test_the_amqp_floor_runs_on_a_tiny_n() -> None:
    broker = amqp_test_url(store=False).split("?")[0]
    command = [sys.executable, str(BENCH / "amqp_floor.py"), "--url", broker, "--messages", "5"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "publish -> consume p50" in done.stdout, done.stdout


@pytest.mark.servers
def test_instructions_counts_a_drain_under_valgrind() -> None:
    """``instructions.py`` runs its phases under callgrind (about half a minute each
    here, most of it Python's start-up): the smallest run that proves it counts, the
    worker's instructions and, with ``--server``, those of a private redis-server."""
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    if shutil.which("valgrind") is None or shutil.which("redis-server") is None:
        message = "valgrind or redis-server is not installed (Debian packages of those names)"
        if REQUIRE_SERVERS:
            pytest.fail(f"{message} (SHIGOTO_REQUIRE_SERVERS=1)")
        pytest.skip(message)
    command = [sys.executable, str(BENCH / "instructions.py"), "--url", shared_redis_url("bench")]
    arguments = ["--jobs", "3", "--variants", "off", "--phases", "drain", "--parallel", "2"]
    done = subprocess.run(
        [*command, *arguments, "--server"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for row in ("drain", "drain:redis", "drain:both"):
        assert re.search(rf"^{row} +-?[\d,]+$", done.stdout, re.MULTILINE), done.stdout
    assert "--server" in done.stdout and "--phases drain" in done.stdout  # reproducible
