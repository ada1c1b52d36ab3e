"""What metrics recording costs a worker: the same drain with ``metrics=True`` and
``metrics=False``, alternating, in one process.

    python bench/metrics_overhead.py --url sqlite:////tmp/overhead.db [--jobs 20000]
                                     [--pairs 5] [--concurrency 50]

Wall-clock throughput on a shared machine moves ±30 % from run to run, more than the
effect measured here, so besides jobs/s this reports the worker's **CPU time per job**
(``time.process_time``: every thread of the process, including the SQLite executor),
which contention disturbs far less. Each run drains a fresh queue of no-op jobs
(``remove_on_complete``); medians over ``--pairs`` alternating on/off runs.

``--flushes N`` (default 200, 0 to skip) also times the backend write alone: ``N``
calls of ``record_metrics`` with a typical flush (3 job names, every field a worker
records: outcomes, both histograms, sums), median µs per call — the once-a-second cost
that grows with the fields written (e.g. the lifetime totals of issue 6).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from shigoto import App, JobContext
from shigoto.backends.contract import MINUTE_MS, MetricSample
from shigoto.metrics import BOUNDS_MS


async def drain(url: str, jobs: int, concurrency: int, metrics: bool) -> tuple[float, float]:
    """(jobs per second, CPU microseconds per job) of one burst drain."""
    queue = f"overhead-{os.urandom(4).hex()}"
    app = App(url)

    @app.job(queue=queue, name="noop")
    async def noop(ctx: JobContext, n: int) -> None:
        return None

    try:
        await app.queue(queue).add_bulk(
            {"name": "noop", "data": {"n": n}, "remove_on_complete": True} for n in range(jobs)
        )
        worker = app.worker([queue], concurrency, burst=True, handle_signals=False, metrics=metrics)
        wall, cpu = time.perf_counter(), time.process_time()
        await worker.run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert worker.processed == jobs, worker.processed
        return jobs / wall, cpu / jobs * 1e6
    finally:
        await app.close()


async def flush_cost(url: str, flushes: int) -> float:
    """Median µs of one ``record_metrics`` call with a typical one-second flush."""
    queue = f"overhead-{os.urandom(4).hex()}"
    app = App(url)
    fields = {"completed": 40, "failed": 2, "retried": 1, "dead": 1, "slow": 0}
    fields.update(run_ms=1234, wait_ms=567)
    fields.update({f"run_{i}": 3 for i in range(len(BOUNDS_MS) + 1)})
    fields.update({f"wait_{i}": 2 for i in range(len(BOUNDS_MS) + 1)})
    try:
        backend = await app.backend()
        times = []
        for _ in range(flushes):
            now = app.clock.now_ms()
            minute = now - now % MINUTE_MS
            samples = [MetricSample(queue, f"job{n}", minute, dict(fields)) for n in range(3)]
            start = time.perf_counter()
            await backend.record_metrics(samples, now_ms=now)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e6
    finally:
        await app.close()


async def main(args: argparse.Namespace) -> None:
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for n in range(args.pairs):
        for metrics in (True, False) if n % 2 == 0 else (False, True):
            rate, cpu = await drain(args.url, args.jobs, args.concurrency, metrics)
            results[metrics].append((rate, cpu))
            print(
                f"metrics={'on ' if metrics else 'off'}  {rate:8,.0f} jobs/s  {cpu:6.1f} µs CPU/job"
            )
    on_rate = statistics.median(r for r, _ in results[True])
    off_rate = statistics.median(r for r, _ in results[False])
    on_cpu = statistics.median(c for _, c in results[True])
    off_cpu = statistics.median(c for _, c in results[False])
    print(f"median  on: {on_rate:8,.0f} jobs/s  {on_cpu:6.1f} µs CPU/job")
    print(f"median off: {off_rate:8,.0f} jobs/s  {off_cpu:6.1f} µs CPU/job")
    print(
        f"overhead: {100 * (off_rate - on_rate) / off_rate:+.1f} % throughput, "
        f"{100 * (on_cpu - off_cpu) / off_cpu:+.1f} % CPU per job"
    )
    if args.flushes:
        cost = await flush_cost(args.url, args.flushes)
        print(f"record_metrics: {cost:,.0f} µs per flush (3 names, median of {args.flushes})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--flushes", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
