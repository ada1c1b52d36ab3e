"""The accounting every fault test ends with (issue 10).

Two sources are compared: shigoto's own records (what the backend says) and the
side-effect ledger the handler writes to a separate SQLite file (what really ran,
see ``worker_proc.py``). :func:`check` asserts:

1. every job enqueued exists and is ``completed`` or ``dead`` — and a dead job has a
   reason; nothing is ``waiting`` / ``delayed`` / ``active`` after settling, and no
   final record still holds a lease;
2. every completed job's side effect happened at least once;
3. a job ran more than once per attempt only if it was *in flight at a fault*: its
   history holds an interruption (``Stalled``, ``WorkerShutdown``, ``LeaseLost``) or
   an earlier run of it was on a worker the test faulted (killed, cut off). That count
   is reported as ``duplicated``;
4. no two workers ran the same job at the same time while both held valid leases:
   when two runs of a job overlap in time (the earlier one had not ended, or never
   ended because it was killed, when the later one started), the earlier worker must
   have lost its lease by then — the job's history names it in a ``Stalled`` entry, or
   it is one of the faulted workers.

:func:`check_ticks` does the same for a schedule fired by several scheduler processes
(``bench/soak.py``): every tick claimed once, every tick has its one job (a missing one
only where the misfire policy explains it) and that job completed.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from shigoto import JobRecord, JobState
from shigoto.schedule import tick_job_id

INTERRUPTIONS = frozenset({"Stalled", "WorkerShutdown", "LeaseLost"})


@dataclass(frozen=True)
class Execution:
    """One row of the side-effect ledger: one run of a handler."""

    seq: int
    job_id: str
    attempt: int
    pid: int
    worker_id: str
    start_ms: int
    end_ms: int | None


def ledger(effects: Path) -> list[Execution]:
    """Every recorded run, in the order they started."""
    conn = sqlite3.connect(effects, timeout=60)
    try:
        rows = conn.execute(
            "SELECT seq, job_id, attempt, pid, worker_id, at_ms, end_ms"
            " FROM executions ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [Execution(*row) for row in rows]


@dataclass
class Report:
    """What :func:`check` found (printed and attached to the test report)."""

    jobs: int
    completed: int
    dead: int
    executions: int
    duplicated: int
    """Jobs with more runs than attempts: every one was in flight at a fault."""
    overlapping: int
    """Jobs with two overlapping runs: every one's earlier run had lost its lease."""
    reasons: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        reasons = ",".join(f"{k}={v}" for k, v in sorted(self.reasons.items())) or "-"
        return (
            f"jobs={self.jobs} completed={self.completed} dead={self.dead} "
            f"(reasons {reasons}) executions={self.executions} "
            f"duplicated={self.duplicated} overlapping={self.overlapping}"
        )


def check(
    ids: Iterable[str],
    records: dict[str, JobRecord],
    runs: list[Execution],
    *,
    faulted: Iterable[str] = (),
    dead_reasons: Iterable[str] | None = None,
) -> Report:
    """Assert the accounting; ``faulted``: worker ids the test killed or cut off;
    ``dead_reasons``: the only reasons a dead job may have (None: any non-empty one)."""
    expected = set(ids)
    faulted = set(faulted)
    allowed = None if dead_reasons is None else set(dead_reasons)
    missing = expected - set(records)
    assert not missing, f"{len(missing)} job(s) lost: {sorted(missing)[:5]}"

    by_job: dict[str, list[Execution]] = {}
    for run in runs:
        by_job.setdefault(run.job_id, []).append(run)

    report = Report(len(expected), 0, 0, len(runs), 0, 0)
    problems: list[str] = []
    for job_id in sorted(expected):
        record = records[job_id]
        mine = by_job.get(job_id, [])
        if record.state is JobState.COMPLETED:
            report.completed += 1
            if not mine:
                problems.append(f"{job_id}: completed, but its side effect never happened")
        elif record.state is JobState.DEAD:
            report.dead += 1
            report.reasons[record.reason or ""] += 1
            if not record.reason:
                problems.append(f"{job_id}: dead without a reason")
            elif allowed is not None and record.reason not in allowed:
                problems.append(f"{job_id}: dead for an unexpected reason {record.reason!r}")
        else:
            problems.append(f"{job_id}: left {record.state.value}")
        if record.lease_until_ms is not None:
            problems.append(f"{job_id}: final but still holds a lease")

        interrupted = [e for e in record.errors if e.error_type in INTERRUPTIONS]
        stalled_on = {e.worker_id for e in interrupted}
        per_attempt = Counter(run.attempt for run in mine)
        if any(n > 1 for n in per_attempt.values()):
            report.duplicated += 1
            earlier = {run.worker_id for run in mine[:-1]}
            if not interrupted and not earlier & faulted:
                problems.append(
                    f"{job_id}: ran {len(mine)} times with no fault to explain it: "
                    f"{[(r.worker_id, r.attempt) for r in mine]}"
                )
        overlapped = False
        for first, second in pairwise(mine):
            if first.end_ms is not None and first.end_ms <= second.start_ms:
                continue
            overlapped = True
            if first.worker_id not in stalled_on | faulted:
                problems.append(
                    f"{job_id}: {first.worker_id} and {second.worker_id} ran it at once, and "
                    "the first had not lost its lease"
                )
        report.overlapping += overlapped
    assert not problems, f"{len(problems)} accounting problem(s):\n" + "\n".join(problems[:20])
    return report


# -- scheduled ticks -------------------------------------------------------------------


KILL_WINDOW_MS = 5_000
"""How soon after a tick a scheduler kill may explain a claim missing from the ledger."""


@dataclass(frozen=True)
class TickClaim:
    """One row of the ``tick_claims`` ledger: a scheduler process won a tick."""

    fire_ms: int
    pid: int
    at_ms: int


def tick_claims(effects: Path) -> list[TickClaim]:
    """Every tick a scheduler recorded winning (none when no scheduler ran)."""
    conn = sqlite3.connect(effects, timeout=60)
    try:
        rows = conn.execute("SELECT fire_ms, pid, at_ms FROM tick_claims ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # no scheduler ever created the table
        rows = []
    finally:
        conn.close()
    return [TickClaim(*row) for row in rows]


@dataclass
class TickReport:
    """What :func:`check_ticks` found."""

    ticks: int
    """Ticks due in the checked range."""
    jobs: int
    """Ticks that have their job."""
    completed: int
    duplicates: int
    """Ticks claimed by more than one scheduler (must be 0)."""
    gaps: int
    """Ticks without a job, every one explained by the misfire policy."""
    unrecorded: int
    """Ticks whose job exists but whose claim no scheduler recorded: a scheduler was
    killed between its claim and its ledger write (allowed only when one was killed
    within ``KILL_WINDOW_MS`` after the tick)."""
    reran: int
    """Tick jobs that ran more than once (only when in flight at a worker kill)."""
    late_p50_ms: float
    late_max_ms: int
    by_pid: dict[int, int] = field(default_factory=dict)
    unrecorded_ticks: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        split = ",".join(f"{pid}:{n}" for pid, n in sorted(self.by_pid.items()))
        return (
            f"ticks={self.ticks} jobs={self.jobs} completed={self.completed} "
            f"duplicates={self.duplicates} gaps={self.gaps} unrecorded={self.unrecorded} "
            f"reran={self.reran} late p50={self.late_p50_ms:.0f} ms max={self.late_max_ms} ms "
            f"claims per scheduler pid {split or '-'}"
        )


def check_ticks(
    schedule: str,
    *,
    every_ms: int,
    since_ms: int,
    last_fire_ms: int,
    claims: list[TickClaim],
    records: dict[str, JobRecord],
    runs: list[Execution],
    unscheduled: Iterable[tuple[int, int]] = (),
    grace_ms: int = 60_000,
    scheduler_kills_ms: Iterable[int] = (),
) -> TickReport:
    """Assert that every tick of an interval schedule in ``(since_ms, last_fire_ms]``
    became exactly one job, which completed.

    ``unscheduled``: wall-clock intervals (ms) during which no scheduler process ran. A
    tick without a job is a gap, and a gap is allowed only when the misfire policy
    (``skip``, ``misfire_grace`` = ``grace_ms``) explains it: no scheduler ran at any
    time between the tick and the end of its grace. ``scheduler_kills_ms``: when
    scheduler processes were killed (wall clock): a tick with a job but no recorded
    claim is allowed only when one was killed within ``KILL_WINDOW_MS`` after it.
    """
    kills = sorted(scheduler_kills_ms)
    down = sorted(unscheduled)

    def explained(fire: int) -> bool:
        at = fire
        for start, end in down:
            if start <= at < end:
                at = end
            if at > fire + grace_ms:
                return True
        return at > fire + grace_ms

    first = since_ms - since_ms % every_ms + every_ms
    due = list(range(first, last_fire_ms + 1, every_ms))
    per_tick = Counter(c.fire_ms for c in claims)
    runs_of = Counter(run.job_id for run in runs)
    late = sorted(c.at_ms - c.fire_ms for c in claims)
    report = TickReport(
        ticks=len(due),
        jobs=0,
        completed=0,
        duplicates=sum(1 for n in per_tick.values() if n > 1),
        gaps=0,
        unrecorded=0,
        reran=0,
        late_p50_ms=float(late[len(late) // 2]) if late else 0.0,
        late_max_ms=late[-1] if late else 0,
        by_pid=dict(Counter(c.pid for c in claims)),
    )
    problems: list[str] = []
    if report.duplicates:
        twice = sorted(t for t, n in per_tick.items() if n > 1)
        problems.append(f"{report.duplicates} tick(s) claimed more than once: {twice[:5]}")
    for fire in due:
        job_id = tick_job_id(schedule, fire)
        record = records.get(job_id)
        if record is None:
            report.gaps += 1
            if not explained(fire):
                problems.append(f"tick {fire}: no job, and a scheduler was running")
            continue
        report.jobs += 1
        if fire not in per_tick:
            report.unrecorded += 1
            report.unrecorded_ticks.append(fire)
            if not any(0 <= kill - fire <= KILL_WINDOW_MS for kill in kills):
                problems.append(f"tick {fire}: a job but no recorded claim, and no kill")
        if record.state is JobState.COMPLETED:
            report.completed += 1
        else:
            problems.append(f"tick {fire}: its job {job_id} is {record.state.value}")
        if runs_of[job_id] > 1:
            report.reran += 1
        elif runs_of[job_id] == 0:
            problems.append(f"tick {fire}: its job {job_id} never ran")
    assert not problems, f"{len(problems)} tick problem(s):\n" + "\n".join(problems[:20])
    return report
