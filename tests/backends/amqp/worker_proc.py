"""A worker process for the RabbitMQ tests (killed with SIGKILL on purpose).

    python worker_proc.py URL QUEUE --concurrency N --lease-s S --grace-s G

Runs ``hold`` jobs (sleep ``seconds``), ``mark`` jobs (log a run) and ``suicide`` jobs
(log a run, then SIGKILL this very process) until stopped; prints "ready" once
connected, and closes the app when the worker stops (as the CLI does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from shigoto import App, JobContext


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lease-s", type=float, default=2.0)
    parser.add_argument("--grace-s", type=float, default=30.0)
    args = parser.parse_args()
    app = App(args.url)

    @app.job(queue=args.queue)
    async def hold(ctx: JobContext, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @app.job(queue=args.queue)
    async def mark(ctx: JobContext, n: int, seconds: float = 0.0, log: str = "") -> int:
        await asyncio.sleep(seconds)
        if log:  # store-less runs keep no results: each run appends "job_id pid" here
            with open(log, "a") as out:
                out.write(f"{ctx.job_id} {os.getpid()}\n")
        return os.getpid()

    @app.job(queue=args.queue)
    async def suicide(ctx: JobContext, log: str, seconds: float = 0.0) -> None:
        with open(log, "a") as out:
            out.write(f"{ctx.job_id} {os.getpid()} {ctx.attempt} {ctx.job.stalls}\n")
        await asyncio.sleep(seconds)
        os.kill(os.getpid(), signal.SIGKILL)

    worker = app.worker(
        [args.queue],
        args.concurrency,
        lease_s=args.lease_s,
        stall_check_s=0.2,
        idle_wait_s=0.2,
        shutdown_grace_s=args.grace_s,
    )
    await app.backend()
    print("ready", flush=True)
    try:
        await worker.run()
    finally:
        await app.close()


if __name__ == "__main__":
    asyncio.run(main())
