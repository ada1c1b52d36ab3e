"""A worker process for the RabbitMQ tests (killed with SIGKILL on purpose).

    python worker_proc.py URL QUEUE --concurrency N --lease-s S

Runs ``hold`` jobs (sleep ``seconds``) until stopped; prints "ready" once connected.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from shigoto import App, JobContext


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lease-s", type=float, default=2.0)
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

    worker = app.worker(
        [args.queue], args.concurrency, lease_s=args.lease_s, stall_check_s=0.2, idle_wait_s=0.2
    )
    await app.backend()
    print("ready", flush=True)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
