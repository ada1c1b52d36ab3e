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
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from shigoto import JobRecord, JobState

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
