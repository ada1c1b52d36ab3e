"""A worker process for fault tests: ``python worker_proc.py --url URL --effects PATH``.

It runs the ``effect`` job on queue ``faults``. Every execution of the handler is
written, before anything else, to a *separate* SQLite file (``--effects``): job id,
attempt and worker pid. That file is the ground truth of what really ran, independent
of what shigoto's own tables claim.
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
    " pid INTEGER NOT NULL, worker_id TEXT NOT NULL, at_ms INTEGER NOT NULL)"
)


def open_effects(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(EFFECTS_SCHEMA)
    return conn


def build_app(url: str, effects_path: str) -> App:
    app = App(url)
    effects = open_effects(effects_path)
    pid = os.getpid()

    @app.job(queue=QUEUE, name="effect")
    async def effect(ctx: JobContext, n: int, sleep: float = 0.0, slow_once: bool = False) -> int:
        # the side effect, committed before the handler does anything else
        effects.execute(
            "INSERT INTO executions (job_id, attempt, pid, worker_id, at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (ctx.job_id, ctx.attempt, pid, ctx.worker_id, int(time.time() * 1000)),
        )
        if sleep:
            runs = effects.execute(
                "SELECT count(*) FROM executions WHERE job_id = ?", (ctx.job_id,)
            ).fetchone()[0]
            if not slow_once or runs == 1:
                await asyncio.sleep(sleep)
        return n

    return app


async def main(args: argparse.Namespace) -> None:
    app = build_app(args.url, args.effects)
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
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(message)s")
    asyncio.run(main(parse(sys.argv[1:])))
