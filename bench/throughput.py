"""Throughput of one backend: enqueue N no-op jobs with ``add_bulk``, then drain them.

    python bench/throughput.py --url sqlite:////tmp/bench.db [--jobs 20000]
                               [--concurrency 50] [--processes 1] [--work-us 0]
                               [--remove-on-complete] [--script-times]

Enqueueing is timed in this process. Draining is done by ``--processes`` fresh worker
processes (default one), each started, imported and connected *before* the clock
starts: they report "ready", wait for "go" on stdin, and time only the processing.
Every run uses a fresh random queue name, so runs against a shared server never mix.

``--work-us N`` makes each job hold the CPU for N µs (a busy loop in the handler, the
way CPU-bound work in an ``async`` handler holds the event loop), to see how more
worker processes scale once a job costs more than the framework's own few µs. On
Redis the server's own CPU time per job is read from ``INFO cpu`` around the drain:
worker + server CPU per job is what bounds the jobs/s that the machine's cores allow.
``--script-times`` also splits the server's time by script and command, from its slow
log (every command is logged during the drain, which costs Redis a little itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from shigoto import App, JobContext

DEFAULT_JOBS = 20_000
DEFAULT_CONCURRENCY = 50
T = TypeVar("T")


# -- the worker side (a child process) ---------------------------------------------------


async def run_worker(args: argparse.Namespace) -> None:
    app = App(args.url)

    work_s = args.work_us / 1e6

    @app.job(queue=args.queue)
    async def noop(ctx: JobContext, n: int) -> None:
        if work_s:
            until = time.perf_counter() + work_s
            while time.perf_counter() < until:
                pass

    worker = app.worker(
        [args.queue],
        args.concurrency,
        burst=True,
        handle_signals=False,
        metrics=not args.no_metrics,
    )
    await app.backend()  # connect (and migrate) before the clock starts
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # wait for "go"
    started, cpu = time.time(), time.process_time()
    await worker.run()
    finished, cpu = time.time(), time.process_time() - cpu
    await app.close()
    report = {"processed": worker.processed, "failed": worker.failed, "cpu_s": cpu}
    print(json.dumps({**report, "started": started, "finished": finished}), flush=True)


# -- the driver ---------------------------------------------------------------------------


async def enqueue(args: argparse.Namespace) -> float:
    app = App(args.url)
    options: dict[str, Any] = {"remove_on_complete": True} if args.remove_on_complete else {}
    jobs = ({"name": "noop", "data": {"n": n}, **options} for n in range(args.jobs))
    await app.backend()  # connect outside the timing
    started = time.perf_counter()
    added = await app.queue(args.queue).add_bulk(jobs)
    elapsed = time.perf_counter() - started
    await app.close()
    assert len(added) == args.jobs
    return elapsed


async def leftover(args: argparse.Namespace) -> dict[str, int]:
    app = App(args.url)
    try:
        return await app.queue(args.queue).counts()
    finally:
        await app.close()


def drain(args: argparse.Namespace) -> tuple[int, float, float]:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--url",
        args.url,
        "--queue",
        args.queue,
        "--concurrency",
        str(args.concurrency),
        "--work-us",
        str(args.work_us),
        *(["--no-metrics"] if args.no_metrics else []),
        *(["--loop", args.loop] if args.loop != "asyncio" else []),
    ]
    children = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(args.processes)
    ]
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if line != "ready":
            raise SystemExit(f"bench worker failed to start (said {line!r})")
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=3600)
        if child.returncode != 0:
            raise SystemExit(f"bench worker exited with {child.returncode}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    processed = sum(r["processed"] for r in reports)
    elapsed = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
    return processed, elapsed, sum(r["cpu_s"] for r in reports)


def server_cpu_s(url: str) -> float | None:
    """CPU seconds the Redis server has used so far (user + system), or None when the
    backend is not Redis or the server cannot be asked with the URL's bare address (TLS
    settings and the like are in its query). Read from the driver, so the workers'
    clocks are untouched."""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(url.split("?", 1)[0])
        try:
            info = client.info("cpu")
        finally:
            client.close()
    except redis.RedisError:
        return None
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class ScriptTimes:
    """What each script (and each command) cost Redis during the drain, from its slow
    log: logging every command (``slowlog-log-slower-than 0``) for the drain only, then
    restoring the server's settings. A script's time includes the commands it calls,
    which are listed on their own too, so the rows add up to more than the total."""

    KEEP = 500_000

    def __init__(self, url: str) -> None:
        import redis

        from shigoto.backends.redis.plumbing import SCRIPTS

        self._client = redis.Redis.from_url(url.split("?", 1)[0])
        self._names = {script.sha: name for name, script in SCRIPTS.items()}
        self._saved = self._client.config_get("slowlog-*")

    def __enter__(self) -> ScriptTimes:
        self._client.config_set("slowlog-max-len", self.KEEP)
        self._client.slowlog_reset()
        self._client.config_set("slowlog-log-slower-than", 0)
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.config_set("slowlog-log-slower-than", 10**9)
        self._entries = self._client.slowlog_get(self.KEEP)
        self._client.slowlog_reset()
        for key, value in self._saved.items():
            self._client.config_set(key, value)
        self._client.close()

    def report(self, jobs: int) -> list[str]:
        totals: dict[str, list[int]] = {}
        for entry in self._entries:
            command = entry["command"].split()
            name = command[0].decode().upper()
            if name == "EVALSHA" and len(command) > 1:
                name = self._names.get(command[1].decode(), command[1].decode()[:12]) + ".lua"
            row = totals.setdefault(name, [0, 0])
            row[0] += 1
            row[1] += entry["duration"]
        rows = sorted(totals.items(), key=lambda item: -item[1][1])
        return [
            f"  {name:<28} {calls:>7,} calls {us / calls:>9.1f} µs/call {us / jobs:>7.2f} µs/job"
            for name, (calls, us) in rows
            if us / jobs >= 0.005 and name not in ("SLOWLOG", "CONFIG")
        ]


def reproduce(args: argparse.Namespace) -> str:
    parts = ["python", "bench/throughput.py", "--url", args.url, "--jobs", str(args.jobs)]
    parts += ["--concurrency", str(args.concurrency), "--processes", str(args.processes)]
    if args.remove_on_complete:
        parts.append("--remove-on-complete")
    if args.work_us:
        parts += ["--work-us", str(args.work_us)]
    if args.no_metrics:
        parts.append("--no-metrics")
    if args.script_times:
        parts.append("--script-times")
    if args.loop != "asyncio":
        parts += ["--loop", args.loop]
    return shlex.join(parts)


def run_on(loop: str, main: Coroutine[Any, Any, T]) -> T:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="backend URL, e.g. sqlite:////tmp/b.db")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--processes", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--work-us", type=int, default=0, help="CPU µs each job holds (busy loop; default 0)"
    )
    parser.add_argument(
        "--remove-on-complete", action="store_true", help="delete jobs as they complete"
    )
    parser.add_argument(
        "--no-metrics", action="store_true", help="workers record no metrics (overhead check)"
    )
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop (both sides)"
    )
    parser.add_argument(
        "--script-times",
        action="store_true",
        help="Redis: what each script and command cost the server during the drain (slow log)",
    )
    parser.add_argument("--queue", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_on(args.loop, run_worker(args))
        return
    if args.jobs < 1 or args.concurrency < 1 or args.processes < 1:
        parser.error("--jobs, --concurrency and --processes must be >= 1")
    if args.work_us < 0:
        parser.error("--work-us must be >= 0")
    if args.script_times and not args.url.startswith(("redis://", "rediss://")):
        parser.error("--script-times reads a Redis server's slow log: a redis:// URL only")
    args.queue = f"bench-{os.urandom(4).hex()}"

    enqueue_s = run_on(args.loop, enqueue(args))
    times = ScriptTimes(args.url) if args.script_times else contextlib.nullcontext()
    server_before = server_cpu_s(args.url)
    with times:
        processed, process_s, cpu_s = drain(args)
    server_after = server_cpu_s(args.url)
    server_s = None
    if server_before is not None and server_after is not None:
        server_s = server_after - server_before
    counts = run_on(args.loop, leftover(args))

    print(f"backend    {args.url}")
    print(f"queue      {args.queue}")
    print(
        f"enqueue    {args.jobs:>8,} jobs in {enqueue_s:7.2f} s = "
        f"{args.jobs / enqueue_s:>9,.0f} jobs/s   (add_bulk)"
    )
    print(
        f"process    {processed:>8,} jobs in {process_s:7.2f} s = "
        f"{processed / process_s:>9,.0f} jobs/s   ({args.processes} worker process(es), "
        f"concurrency {args.concurrency})"
    )
    cpu_us = cpu_s / max(processed, 1) * 1e6
    print(f"worker CPU {cpu_us:8.1f} µs per job (every thread of the worker)")
    if server_s is not None:
        server_us = server_s / max(processed, 1) * 1e6
        bound = (os.cpu_count() or 1) / (cpu_us + server_us) * 1e6
        print(
            f"Redis CPU  {server_us:8.1f} µs per job (INFO cpu around the drain); "
            f"{os.cpu_count()} cores allow at most {bound:,.0f} jobs/s at these costs"
        )
    if isinstance(times, ScriptTimes):
        print("Redis time by script and command (slow log; a script's includes its commands)")
        print("\n".join(times.report(max(processed, 1))))
    pending = counts["waiting"] + counts["delayed"] + counts["active"]
    if processed != args.jobs or pending:
        print(f"WARNING    processed {processed} of {args.jobs}; left: {counts}")
    print(f"reproduce  {reproduce(args)}")


if __name__ == "__main__":
    main()
