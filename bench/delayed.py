"""How late delayed jobs start: the time from when each was due to when it began.

    python bench/delayed.py --url sqlite:////tmp/d.db [--jobs 40] [--max-delay-ms 300]

A worker runs in this process (concurrency 10) and is idle before the first job. Jobs
are added one at a time, 50 – 150 ms apart, each delayed by a random 50 ms to
``--max-delay-ms``; the handler notes how long after its due time it started. Prints
p50 / p90 / max of that lateness. Every run uses a fresh random queue name.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

from shigoto import App, JobContext


async def main(args: argparse.Namespace) -> None:
    app = App(args.url)
    queue = f"delayed-{os.urandom(4).hex()}"
    late_ms: list[float] = []
    worker = app.worker([queue], 10, handle_signals=False, metrics=False)

    @app.job(queue=queue, remove_on_complete=True)
    async def probe(ctx: JobContext, due: float) -> None:
        late_ms.append((time.time() - due) * 1000)
        if len(late_ms) >= args.jobs:
            worker.stop()

    running = asyncio.ensure_future(worker.run())
    try:
        await asyncio.sleep(0.5)  # idle, parked in its wait
        for _ in range(args.jobs):
            delay = random.uniform(0.05, args.max_delay_ms / 1000)
            await app.queue(queue).add("probe", {"due": time.time() + delay}, delay=delay)
            await asyncio.sleep(random.uniform(0.05, 0.15))
        await asyncio.wait_for(running, 30)
    finally:
        worker.stop(now=True)
        await asyncio.gather(running, return_exceptions=True)
        await app.close()
    ordered = sorted(late_ms)
    print(
        f"delayed jobs  n={len(ordered)}  lateness p50 {statistics.median(ordered):6.1f} ms   "
        f"p90 {ordered[int(0.9 * (len(ordered) - 1))]:6.1f} ms   max {ordered[-1]:6.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--max-delay-ms", type=float, default=300.0)
    asyncio.run(main(parser.parse_args()))
