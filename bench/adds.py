"""Single ``queue.add`` calls from many tasks of one process at once (a web app's request
handlers), default App (guard and audit on).

    python bench/adds.py --url redis://127.0.0.1:6379/0 [--jobs 10000] [--tasks 20]
                         [--loop asyncio|uvloop]

Prints adds per second and the producer's CPU µs per add. The backend is connected
before the clock starts; every run uses a fresh random queue name.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from shigoto import App


async def main(args: argparse.Namespace) -> None:
    app = App(args.url)
    queue = app.queue(f"adds-{os.urandom(4).hex()}")
    await app.backend()
    left = args.jobs

    async def producer() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await queue.add("noop", {"n": left})

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(producer() for _ in range(args.tasks)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await app.close()
    print(
        f"adds       {args.jobs:>8,} from {args.tasks} tasks in {wall:6.2f} s = "
        f"{args.jobs / wall:>8,.0f} adds/s   {cpu / args.jobs * 1e6:6.1f} µs CPU per add"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parsed = parser.parse_args()
    if parsed.loop == "uvloop":
        import uvloop

        uvloop.run(main(parsed))
    else:
        asyncio.run(main(parsed))
