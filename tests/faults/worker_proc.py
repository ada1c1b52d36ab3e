"""A worker process for fault tests: ``python worker_proc.py --url URL --effects PATH``.

It runs the ``effect`` job on queue ``faults``. Every execution of the handler is
written, before anything else, to a *separate* SQLite file (``--effects``): job id,
attempt, worker pid and start time; the end time is added when the handler returns or
raises (a killed execution keeps ``end_ms`` NULL). That file is the ground truth of what
really ran, independent of what shigoto's own tables claim.

``--clock-offset S`` runs the worker with a clock ``S`` seconds ahead (clock skew).
``--schedule-every S`` makes the process a *scheduler* instead of a worker: it fires
the ``effect`` job every ``S`` seconds (schedule :data:`TICK_SCHEDULE`) and writes each
tick it wins to the ``tick_claims`` table of the same ledger (``bench/soak.py`` runs two
of them to check every tick becomes exactly one job).
The ``effect`` data may ask for a mixed workload (``bench/soak.py``): ``fail_until``
raises until that attempt, ``fail_always`` raises every time, ``progress`` reports that
many progress steps while sleeping, ``exit_once`` calls ``os._exit`` on the first run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
import time

from shigoto import App, JobContext

QUEUE = "faults"
EFFECTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS executions ("
    " seq INTEGER PRIMARY KEY, job_id TEXT NOT NULL, attempt INTEGER NOT NULL,"
    " pid INTEGER NOT NULL, worker_id TEXT NOT NULL, at_ms INTEGER NOT NULL,"
    " end_ms INTEGER)"
)
TICK_SCHEDULE = "soak-tick"
CLAIMS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tick_claims ("
    " seq INTEGER PRIMARY KEY, fire_ms INTEGER NOT NULL, pid INTEGER NOT NULL,"
    " at_ms INTEGER NOT NULL)"
)


class OffsetClock:
    """Wall-clock time shifted by a fixed offset: a worker whose clock is wrong."""

    def __init__(self, offset_s: float) -> None:
        self.offset_ms = round(offset_s * 1000)

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms


class Planned(Exception):
    """A failure the workload asked for."""


def open_effects(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    # A small page cache and an index for the per-job lookups: the ledger's own memory
    # stays small and flat, so a soak's RSS figures measure the worker, not the ledger.
    conn.execute("PRAGMA cache_size = -256")
    conn.execute(EFFECTS_SCHEMA)
    conn.execute("CREATE INDEX IF NOT EXISTS executions_job ON executions (job_id)")
    return conn


def build_app(url: str, effects_path: str, clock_offset_s: float = 0.0) -> App:
    app = App(url, clock=OffsetClock(clock_offset_s) if clock_offset_s else None)
    effects = open_effects(effects_path)
    pid = os.getpid()

    @app.job(queue=QUEUE, name="effect")
    async def effect(
        ctx: JobContext,
        n: int,
        sleep: float = 0.0,
        slow_once: bool = False,
        fail_until: int = 0,
        fail_always: bool = False,
        progress: int = 0,
        exit_once: bool = False,
    ) -> int:
        # the side effect, committed before the handler does anything else
        seq = effects.execute(
            "INSERT INTO executions (job_id, attempt, pid, worker_id, at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (ctx.job_id, ctx.attempt, pid, ctx.worker_id, int(time.time() * 1000)),
        ).lastrowid
        if (
            exit_once
            and effects.execute(
                "SELECT count(*) FROM executions WHERE job_id = ?", (ctx.job_id,)
            ).fetchone()[0]
            == 1
        ):
            os._exit(17)  # the handler kills its own process: no cleanup of any kind
        try:
            if sleep:
                runs = effects.execute(
                    "SELECT count(*) FROM executions WHERE job_id = ?", (ctx.job_id,)
                ).fetchone()[0]
                if not slow_once or runs == 1:
                    steps = max(1, progress)
                    for step in range(steps):
                        await asyncio.sleep(sleep / steps)
                        if progress:
                            await ctx.update_progress(round(100 * (step + 1) / steps))
            if fail_always or ctx.attempt <= fail_until:
                raise Planned(f"planned failure of job {n} at attempt {ctx.attempt}")
            return n
        finally:
            effects.execute(
                "UPDATE executions SET end_ms = ? WHERE seq = ?", (int(time.time() * 1000), seq)
            )

    return app


async def run_scheduler(app: App, effects_path: str, every_s: float) -> None:
    """Fire ``effect`` every ``every_s`` seconds; record each tick this process wins."""
    from shigoto.scheduler import Fired, Scheduler

    claims = open_effects(effects_path)
    claims.execute(CLAIMS_SCHEMA)
    app.every(every_s, name=TICK_SCHEDULE, data={"n": -1, "sleep": 0.02})(app.handlers["effect"])
    pid = os.getpid()

    class Recording(Scheduler):
        async def tick(self, now_ms: int | None = None) -> list[Fired]:
            fired = await super().tick(now_ms)
            for tick in fired:
                claims.execute(
                    "INSERT INTO tick_claims (fire_ms, pid, at_ms) VALUES (?, ?, ?)",
                    (tick.fire_ms, pid, int(time.time() * 1000)),
                )
            return fired

    scheduler = Recording(app)
    print(f"ready {pid}", flush=True)
    try:
        await scheduler.run()
    finally:
        await app.close()
    print(f"done {pid} fired={scheduler.fired}", flush=True)


async def main(args: argparse.Namespace) -> None:
    app = build_app(args.url, args.effects, args.clock_offset)
    if args.schedule_every:
        await run_scheduler(app, args.effects, args.schedule_every)
        return
    worker = app.worker(
        [QUEUE],
        args.concurrency,
        burst=args.burst,
        lease_s=args.lease,
        stall_check_s=args.stall_check,
        shutdown_grace_s=args.grace,
        idle_wait_s=0.05,
        name=f"proc-{os.getpid()}",
    )
    print(f"ready {os.getpid()}", flush=True)
    try:
        await worker.run()
    finally:
        await app.close()
    print(f"done {os.getpid()} processed={worker.processed} failed={worker.failed}", flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--effects", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--stall-check", type=float, default=5.0)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--clock-offset", type=float, default=0.0)
    parser.add_argument("--schedule-every", type=float, default=0.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(message)s")
    asyncio.run(main(parse(sys.argv[1:])))
