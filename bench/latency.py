"""Enqueue → start latency of one backend, measured across processes.

    python bench/latency.py --url redis://127.0.0.1:6379/0 [--jobs 1000]
                            [--interval-ms 10] [--idle-jobs 50] [--idle-gap-ms 250]
                            [--concurrency 10]

A worker process is started, connected and idle *before* the clock starts. This
process then adds one probe job at a time and the handler records, on the shared wall
clock, how long after the ``add`` call began it started:

* **low load** — ``--jobs`` probes, one every ``--interval-ms`` (the issue's "1 job every
  10 ms"): enqueue round trip + wake-up + claim + dispatch.
* **idle pickup** — ``--idle-jobs`` probes, each after ``--idle-gap-ms`` of silence, so
  the worker is parked in its blocking wait when the job arrives.

On Redis, the same probes on the same schedule then go through a bare list (redis-py
``LPUSH`` here, ``BRPOP`` in another process, no job at all): the floor that this
machine, Python and Redis allow any queue, printed with how far above it shigoto is
(``--no-floor`` skips it). Latency on a small VM is mostly cold CPU caches between
probes, so absolute figures move with the machine; the distance to the floor moves less.

Every run uses a fresh random queue name, so runs against a shared server never mix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from shigoto import App, JobContext

DEFAULT_JOBS = 1000
DEFAULT_INTERVAL_MS = 10.0
DEFAULT_IDLE_JOBS = 50
DEFAULT_IDLE_GAP_MS = 250.0


# -- the worker side (a child process) ---------------------------------------------------


async def run_worker(args: argparse.Namespace) -> None:
    app = App(args.url)
    expected = args.jobs + args.idle_jobs
    seen: dict[str, list[float]] = {"load": [], "idle": []}
    worker = app.worker([args.queue], args.concurrency, handle_signals=False)

    @app.job(queue=args.queue)
    async def probe(ctx: JobContext, sent_ns: int, kind: str) -> None:
        seen[kind].append((time.time_ns() - sent_ns) / 1e6)
        if len(seen["load"]) + len(seen["idle"]) >= expected:
            worker.stop()

    await app.backend()  # connect before the clock starts
    print("ready", flush=True)
    await worker.run()
    await app.close()
    print(json.dumps(seen), flush=True)


# -- the driver ---------------------------------------------------------------------------


async def produce(args: argparse.Namespace) -> None:
    app = App(args.url)
    queue = app.queue(args.queue)
    await app.backend()

    async def send(kind: str, sent_ns: int) -> None:
        await queue.add("probe", {"sent_ns": sent_ns, "kind": kind})

    try:
        await send_probes(args, send)
    finally:
        await app.close()


async def send_probes(args: argparse.Namespace, send: Callable[[str, int], Awaitable[Any]]) -> None:
    """``send(kind, sent_ns)`` on the schedule: ``--jobs`` every ``--interval-ms``, then
    ``--idle-jobs`` after ``--idle-gap-ms`` of silence each."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.5)  # let the worker settle into its idle wait
    start = loop.time()
    for n in range(args.jobs):
        await _sleep_until(start + n * args.interval_ms / 1000)
        await send("load", time.time_ns())
    for _ in range(args.idle_jobs):
        await asyncio.sleep(args.idle_gap_ms / 1000)
        await send("idle", time.time_ns())


# -- the floor: the same probes through a bare Redis list ------------------------------


def server_url(url: str) -> str:
    return url.split("?", 1)[0]


async def run_floor_consumer(args: argparse.Namespace) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(server_url(args.url), socket_timeout=60)
    seen: dict[str, list[float]] = {"load": [], "idle": []}
    await client.ping()
    print("ready", flush=True)
    for _ in range(args.jobs + args.idle_jobs):
        popped = await client.brpop([args.queue], timeout=30)
        if popped is None:
            break
        kind, _, sent_ns = popped[1].decode().partition(" ")
        seen[kind].append((time.time_ns() - int(sent_ns)) / 1e6)
    await client.aclose()
    print(json.dumps(seen), flush=True)


async def produce_floor(args: argparse.Namespace) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(server_url(args.url), socket_timeout=60)
    await client.ping()

    async def send(kind: str, sent_ns: int) -> None:
        await client.lpush(args.queue, f"{kind} {sent_ns}")

    try:
        await send_probes(args, send)
    finally:
        await client.delete(args.queue)
        await client.aclose()


async def _sleep_until(deadline: float) -> None:
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def describe(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<12} no samples"
    return (
        f"{name:<12} n={len(values):<5} p50 {statistics.median(values):6.2f} ms   "
        f"p90 {percentile(values, 90):6.2f} ms   p99 {percentile(values, 99):6.2f} ms   "
        f"max {max(values):7.2f} ms"
    )


def reproduce(args: argparse.Namespace) -> str:
    parts = ["python", "bench/latency.py", "--url", args.url, "--jobs", str(args.jobs)]
    parts += ["--interval-ms", f"{args.interval_ms:g}", "--idle-jobs", str(args.idle_jobs)]
    parts += ["--idle-gap-ms", f"{args.idle_gap_ms:g}", "--concurrency", str(args.concurrency)]
    if args.loop != "asyncio":
        parts += ["--loop", args.loop]
    if not args.floor:
        parts.append("--no-floor")
    return shlex.join(parts)


def run_on(loop: str, main: Coroutine[Any, Any, None]) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="backend URL, e.g. redis://127.0.0.1/0")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="low-load probes")
    parser.add_argument("--interval-ms", type=float, default=DEFAULT_INTERVAL_MS)
    parser.add_argument("--idle-jobs", type=int, default=DEFAULT_IDLE_JOBS)
    parser.add_argument("--idle-gap-ms", type=float, default=DEFAULT_IDLE_GAP_MS)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop (both sides)"
    )
    parser.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="on Redis, skip the bare-list floor measured after shigoto",
    )
    parser.add_argument("--queue", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor-consumer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_on(args.loop, run_worker(args))
        return
    if args.floor_consumer:
        run_on(args.loop, run_floor_consumer(args))
        return
    if args.jobs < 0 or args.idle_jobs < 0 or args.jobs + args.idle_jobs < 1:
        parser.error("--jobs and --idle-jobs must be >= 0, and not both 0")
    args.queue = f"latency-{os.urandom(4).hex()}"
    seen = measure(args, "--worker", produce)
    print(f"backend      {args.url}")
    print(f"queue        {args.queue}")
    print(describe("low load", seen["load"]) + f"   (1 job every {args.interval_ms:g} ms)")
    print(describe("idle pickup", seen["idle"]) + f"   (after {args.idle_gap_ms:g} ms idle)")
    if args.floor and args.url.startswith(("redis://", "rediss://")):
        floor = measure(args, "--floor-consumer", produce_floor)
        print(describe("floor, load", floor["load"]) + "   (bare LPUSH -> BRPOP, same schedule)")
        print(describe("floor, idle", floor["idle"]))
        for kind, name in (("load", "low load"), ("idle", "idle pickup")):
            if seen[kind] and floor[kind]:
                above = statistics.median(seen[kind]) - statistics.median(floor[kind])
                print(f"{name:<12} p50 {above:+.2f} ms above the floor")
    print(f"reproduce    {reproduce(args)}")


def measure(
    args: argparse.Namespace,
    role: str,
    producer: Callable[[argparse.Namespace], Coroutine[Any, Any, None]],
) -> dict[str, list[float]]:
    """Start the consuming child (``role``), send the probes from here, and return the
    latencies it saw, by kind."""
    command = [sys.executable, os.path.abspath(__file__), role, "--url", args.url]
    command += ["--queue", args.queue, "--concurrency", str(args.concurrency)]
    command += ["--jobs", str(args.jobs), "--idle-jobs", str(args.idle_jobs)]
    command += ["--loop", args.loop]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit(f"bench child ({role}) failed to start")
        run_on(args.loop, producer(args))
        out, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode != 0:
        raise SystemExit(f"bench child ({role}) exited with {child.returncode}")
    seen: dict[str, list[float]] = json.loads(out.strip().splitlines()[-1])
    return seen


if __name__ == "__main__":
    main()
