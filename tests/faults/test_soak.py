"""The soak's own checks (issue 10): the tick accounting catches duplicates and
unexplained gaps, the leak verdict ignores warm-up and restarts; and a short soak runs
end to end (``make faults`` only: it takes about a minute)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from backends.redis.servers import have_redis_binaries
from shigoto import JobRecord, JobState
from shigoto.job import JobOptions
from shigoto.schedule import tick_job_id

from ._accounting import Execution, TickClaim, check_ticks

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
EVERY = 1000
SINCE = 1_700_000_000_500  # registered half-way between two ticks
FIRST = SINCE + 500


def record(fire: int, state: JobState = JobState.COMPLETED) -> JobRecord:
    return JobRecord(
        id=tick_job_id("t", fire), queue="q", name="effect", payload=b"{}",
        options=msgspec.convert({}, JobOptions), state=state, priority=0,
        created_ms=fire, ready_ms=fire,
    )  # fmt: skip


def run(fire: int) -> Execution:
    return Execution(fire, tick_job_id("t", fire), 1, 1, "w", fire + 5, fire + 30)


def ticks(fires: list[int], **overrides: object) -> dict[str, object]:
    options: dict[str, object] = {
        "every_ms": EVERY,
        "since_ms": SINCE,
        "last_fire_ms": fires[-1],
        "claims": [TickClaim(f, 1, f + 10) for f in fires],
        "records": {tick_job_id("t", f): record(f) for f in fires},
        "runs": [run(f) for f in fires],
    }
    options.update(overrides)
    return options


def test_every_tick_once_passes_and_is_reported() -> None:
    fires = [FIRST + n * EVERY for n in range(10)]
    report = check_ticks("t", **ticks(fires))  # type: ignore[arg-type]
    assert (report.ticks, report.jobs, report.completed, report.duplicates) == (10, 10, 10, 0)
    assert report.gaps == 0 and report.late_max_ms == 10


def test_a_tick_claimed_by_two_schedulers_fails() -> None:
    fires = [FIRST + n * EVERY for n in range(5)]
    claims = [TickClaim(f, 1, f + 10) for f in fires] + [TickClaim(fires[2], 2, fires[2] + 12)]
    with pytest.raises(AssertionError, match="claimed more than once"):
        check_ticks("t", **ticks(fires, claims=claims))  # type: ignore[arg-type]


def test_a_gap_while_a_scheduler_ran_fails_but_one_the_misfire_policy_explains_passes() -> None:
    fires = [FIRST + n * EVERY for n in range(100)]
    kept = [f for f in fires if not fires[10] <= f <= fires[80]]
    options = ticks(kept, last_fire_ms=fires[-1])
    with pytest.raises(AssertionError, match="no job, and a scheduler was running"):
        check_ticks("t", **options)  # type: ignore[arg-type]
    # No scheduler from just before tick 10 until tick 81: ticks 10-20 were more than
    # the 60 s grace old when one came back, but 21-80 were not, so it should have
    # fired those.
    down = [(fires[10] - 100, fires[81])]
    with pytest.raises(AssertionError, match="no job"):
        check_ticks("t", **options, unscheduled=down)  # type: ignore[arg-type]
    explained = [f for f in fires if not fires[10] <= f <= fires[20]]
    report = check_ticks(
        "t",
        **ticks(explained, last_fire_ms=fires[-1]),  # type: ignore[arg-type]
        unscheduled=[(fires[10] - 100, fires[21] + 60_000)],
    )
    assert report.gaps == 11 and report.jobs == 89


def test_a_tick_job_that_did_not_complete_fails() -> None:
    fires = [FIRST + n * EVERY for n in range(3)]
    records = {tick_job_id("t", f): record(f) for f in fires}
    records[tick_job_id("t", fires[1])] = record(fires[1], JobState.DEAD)
    with pytest.raises(AssertionError, match="is dead"):
        check_ticks("t", **ticks(fires, records=records))  # type: ignore[arg-type]


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shigoto_bench_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("shigoto_bench_soak", module)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_the_leak_verdict_ignores_warm_up_and_restarts_and_sees_growth() -> None:
    soak = load_soak()
    # Warm-up from 10 to 40 MiB in the first third, then flat, with a restart dip.
    flat = [(float(t), 10_000.0 + 30 * min(t, 100)) for t in range(0, 600, 5)]
    flat = [(t, 5_000.0 if 300 <= t < 308 else v) for t, v in flat]
    verdict = soak.trend("w", flat, end_s=600, unit="KiB", tolerance=0.03, skip=[300.0])
    assert verdict.flat and verdict.per_min == 0
    growing = [(float(t), 40_000.0 + 2 * t) for t in range(0, 600, 5)]  # +120 KiB/min
    verdict = soak.trend("w", growing, end_s=600, unit="KiB", tolerance=0.001)
    assert not verdict.flat and verdict.per_min == pytest.approx(120, rel=0.05)


@pytest.mark.faults
@pytest.mark.slow
def test_a_short_soak_passes_its_accounting() -> None:
    if not have_redis_binaries():
        pytest.skip("redis-server is not installed")
    command = [sys.executable, str(SOAK), "--minutes", "0.4", "--kill-every", "8", "--seed", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "duplicates=0" in done.stdout and "ticks (soak-tick)" in done.stdout
