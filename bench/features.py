"""What the optional features cost on the hot path: metrics, events, the payload guard
and the audit trail all on (the defaults, plus one ``completed`` listener) vs all off.

    python bench/features.py --url redis://127.0.0.1:6379/0 [--jobs 20000] [--rounds 3]
                             [--concurrency 50] [--loop asyncio|uvloop]
                             [--only metrics,events,guard,audit,runs]

``--only`` turns on just the listed features in the "on" variant (``audit``: the
whole trail, ``runs``: only the workers' run entries), to see what each one costs.

Each round runs both variants, in alternating order, in this one process: a bulk
enqueue (``add_bulk`` of ``--jobs`` no-op jobs) and a burst drain of them by one worker.
Each phase is reported as jobs/s and as CPU µs per job: ``time.process_time`` of every
thread of this process, plus on Redis the server's own CPU time (``INFO cpu`` around the
phase), which a busy machine disturbs less than wall clock. Medians over ``--rounds``.
Every run uses a fresh random queue name; jobs are removed on completion.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from typing import Any

from shigoto import App, JobContext
from shigoto.security import AuditSettings
from throughput import server_cpu_s

FEATURES = ("metrics", "events", "guard", "audit", "runs")


class GcClock:
    """Wall time spent in the cyclic garbage collector (``gc.callbacks``): objects kept
    alive for a while (buffered entries, metric samples) make it run more often and
    walk more, a cost the profile of any one function does not show."""

    def __init__(self) -> None:
        self.total = 0.0
        self._began = 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._began


GC = GcClock()


Outcome = tuple[float, float, float, float, float]
"""enqueue jobs/s, its CPU µs/job, process jobs/s, its CPU µs/job, GC µs/job."""


def cpu_s(url: str) -> float:
    """CPU seconds used so far by this process and, on Redis, by the server."""
    return time.process_time() + (server_cpu_s(url) or 0.0)


class Variant:
    """The app of one variant: ``on`` names the features turned on (:data:`FEATURES`),
    with a no-op job on ``queue`` (removed on completion) and, with ``events``, one
    ``completed`` listener that counts."""

    def __init__(self, url: str, on: set[str], queue: str) -> None:
        audit: AuditSettings | bool = "audit" in on
        if "runs" in on and "audit" not in on:
            audit = AuditSettings(enqueues=False)
        self.app = App(url, guard="guard" in on, audit=audit)
        self.on, self.queue, self.name = on, queue, f"noop-{queue}"
        self.completed = 0

        @self.app.job(queue=queue, name=self.name, remove_on_complete=True)
        async def noop(ctx: JobContext, n: int) -> None:
            return None

        if "events" in on:
            self.app.on("completed", self._count)

    def _count(self, event: Any) -> None:
        self.completed += 1

    async def add_bulk(self, jobs: int) -> None:
        await self.app.queue(self.queue).add_bulk(
            ({"name": self.name, "data": {"n": n}} for n in range(jobs)), return_jobs=False
        )

    async def drain(self, jobs: int, concurrency: int) -> None:
        """Run a burst worker until the queue is empty; it must have run ``jobs``."""
        worker = self.app.worker(
            [self.queue],
            concurrency,
            burst=True,
            handle_signals=False,
            metrics="metrics" in self.on,
        )
        await worker.run()
        assert worker.processed == jobs, worker.processed
        assert self.completed == (jobs if "events" in self.on else 0), self.completed


async def one_round(args: argparse.Namespace, features: bool) -> Outcome:
    """One variant's :data:`Outcome`."""
    variant = Variant(
        args.url, set(args.only) if features else set(), f"features-{os.urandom(4).hex()}"
    )
    app = variant.app
    try:
        await app.backend()
        cpu, started = cpu_s(args.url), time.perf_counter()
        await variant.add_bulk(args.jobs)
        enqueue_rate = args.jobs / (time.perf_counter() - started)
        enqueue_cpu = cpu_s(args.url) - cpu
        wall, cpu, in_gc = time.perf_counter(), cpu_s(args.url), GC.total
        await variant.drain(args.jobs, args.concurrency)
        wall, cpu = time.perf_counter() - wall, cpu_s(args.url) - cpu
        in_gc = GC.total - in_gc
        per_job = 1e6 / args.jobs
        return (
            enqueue_rate,
            enqueue_cpu * per_job,
            args.jobs / wall,
            cpu * per_job,
            in_gc * per_job,
        )
    finally:
        await app.close()


async def main(args: argparse.Namespace) -> None:
    results: dict[bool, list[Outcome]] = {True: [], False: []}
    print(f"features on: {', '.join(args.only)}; {args.jobs:,} jobs, {args.rounds} rounds")
    cpu_of = "this process + Redis" if server_cpu_s(args.url) is not None else "this process"
    print(f"CPU/job: {cpu_of}")

    def line(label: str, outcome: Outcome) -> str:
        return (
            f"{label}  enqueue {outcome[0]:9,.0f} jobs/s {outcome[1]:5.2f} µs CPU/job   "
            f"process {outcome[2]:8,.0f} jobs/s {outcome[3]:6.2f} µs CPU/job   "
            f"{outcome[4]:5.2f} µs GC/job"
        )

    for n in range(args.rounds):
        for features in (True, False) if n % 2 == 0 else (False, True):
            outcome = await one_round(args, features)
            results[features].append(outcome)
            print(line(f"features={'on ' if features else 'off'}", outcome), flush=True)

    medians = {
        features: tuple(statistics.median(r[i] for r in results[features]) for i in range(5))
        for features in (True, False)
    }
    for features in (True, False):
        print(line(f"median {'on ' if features else 'off'}", medians[features]))
    on, off = medians[True], medians[False]
    print(
        f"cost of the features: enqueue {100 * (1 - on[0] / off[0]):+.1f} % jobs/s, "
        f"{100 * (on[1] / off[1] - 1):+.1f} % CPU/job; "
        f"process {100 * (1 - on[2] / off[2]):+.1f} % jobs/s, "
        f"{100 * (on[3] / off[3] - 1):+.1f} % CPU/job"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--only",
        type=lambda text: [f for f in text.split(",") if f],
        default=[f for f in FEATURES if f != "runs"],
        help=f"features of the 'on' variant, comma-separated (default: all of {FEATURES})",
    )
    parsed = parser.parse_args()
    if unknown := set(parsed.only) - set(FEATURES):
        parser.error(f"unknown feature(s) {sorted(unknown)}; known: {FEATURES}")
    if parsed.loop == "uvloop":
        import uvloop

        uvloop.run(main(parsed))
    else:
        asyncio.run(main(parsed))
