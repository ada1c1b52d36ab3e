"""Bulk enqueue of a batch: N items as chunks of 100 with ``queue.add_chunks``.

    python bench/batches.py --url sqlite:////tmp/bench-batches.db [--items 1000000]
                            [--chunk-size 100] [--mode chunks|bulk]

``--mode bulk`` enqueues one job per item with ``add_bulk(..., return_jobs=False)``
instead, to show that it streams in bounded memory too.

The items come from a generator (``{"user_id": i}``), so the producer never holds the
input; the figures are items/s from the first call to the sealed batch, and the peak
resident memory of this process (``ru_maxrss``, and RSS sampled at each progress
callback) against its size before the run.
Every run uses a fresh random queue name, so runs against a shared server never mix;
the chunk jobs are left behind (waiting).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import sys
import time

from shigoto import App

DEFAULT_ITEMS = 1_000_000
DEFAULT_CHUNK = 100


def rss_mb() -> float:
    """Current resident memory of this process (Linux /proc), in MiB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def main(args: argparse.Namespace) -> dict[str, object]:
    app = App(args.url)
    queue = app.queue(args.queue)
    await app.backend()  # connect (and migrate) before the clock starts
    before = rss_mb()
    step = max(1, args.items // 10)
    next_report = [step]
    seen_peak = [before]

    def on_progress(items: int, chunks: int) -> None:
        seen_peak[0] = max(seen_peak[0], rss_mb())
        if items >= next_report[0]:
            next_report[0] += step
            print(f"  {items:>10,} items  {chunks:>8,} chunks  rss {rss_mb():7.1f} MiB", flush=True)

    started = time.perf_counter()
    if args.mode == "bulk":
        await queue.add_bulk(
            ({"name": "bench_job", "data": {"user_id": i}} for i in range(args.items)),
            on_progress=lambda stored: on_progress(stored, stored),
            return_jobs=False,
        )
        elapsed = time.perf_counter() - started
        await app.close()
        peak = max(peak_rss_mb(), seen_peak[0])
        return {
            "mode": "add_bulk",
            "items": args.items,
            "chunks": args.items,
            "seconds": round(elapsed, 2),
            "items_per_s": round(args.items / elapsed),
            "chunks_per_s": round(args.items / elapsed),
            "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(peak, 1),
            "peak_growth_mib": round(peak - before, 1),
        }
    batch = await queue.add_chunks(
        "bench_chunk",
        ({"user_id": i} for i in range(args.items)),
        chunk_size=args.chunk_size,
        total_items=args.items,
        on_complete=("bench_done", {}),
        on_progress=on_progress,
    )
    elapsed = time.perf_counter() - started
    await app.close()
    assert batch.total_items == args.items, batch
    peak = max(peak_rss_mb(), seen_peak[0])
    return {
        "mode": "add_chunks",
        "items": args.items,
        "chunks": batch.total_chunks,
        "seconds": round(elapsed, 2),
        "items_per_s": round(args.items / elapsed),
        "chunks_per_s": round((batch.total_chunks or 0) / elapsed),
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_growth_mib": round(peak - before, 1),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="sqlite:////tmp/shigoto-bench-batches.db")
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    parser.add_argument(
        "--mode",
        choices=("chunks", "bulk"),
        default="chunks",
        help="chunks: add_chunks (default); bulk: add_bulk of one job per item",
    )
    args = parser.parse_args()
    args.queue = f"bench-{os.urandom(4).hex()}"
    report = asyncio.run(main(args))
    print(
        f"{report['mode']}: {report['items']:,} items in {report['chunks']:,} jobs in "
        f"{report['seconds']} s = {report['items_per_s']:,} items/s "
        f"({report['chunks_per_s']:,} jobs/s); producer peak RSS "
        f"{report['peak_rss_mib']} MiB (+{report['peak_growth_mib']} MiB over "
        f"{report['rss_before_mib']} MiB at start)"
    )
    print(json.dumps(report))
    print("command:", shlex.join([sys.executable, *sys.argv]))


if __name__ == "__main__":
    cli()
