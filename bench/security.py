"""Cost of the security features on the enqueue path (issue 8: the guard must cost
< 5 % of throughput).

    python bench/security.py [--url sqlite:////tmp/sec.db] [--jobs 20000] [--rounds 5]

1. ``encode_payload`` alone, guard on vs off, for payloads that pass the fast scan and
   for payloads the guard has to walk (µs per job).
2. ``add_bulk`` of ``--jobs`` jobs (what bench/throughput.py times), guard on vs off,
   audit on vs off, best of ``--rounds`` (jobs/s).
3. A worker draining jobs with the audit trail's run entries on vs off (jobs/s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import timeit
import uuid
from typing import Any

from shigoto import App

PAYLOADS: dict[str, dict[str, Any]] = {
    "ids": {"n": 1},
    "typical": {"user_id": 123, "template": "welcome", "locale": "ja", "created_ms": 1700000000000},
    "walked": {"user_id": 1, "session_count": 3, "note": "the token of thanks", "tags": ["a", "b"]},
    "strings": {
        "user_id": "4f9c2e1a-7b3d-4c2a-9e8f-1a2b3c4d5e6f",
        "email": "alice@example.com",
        "callback": "https://example.com/hooks/orders",
        "note": "Please deliver after 6pm",
        "qty": 3,
    },
}


def encode_cost(guard: bool, payload: dict[str, Any], number: int = 50_000) -> float:
    app = App("sqlite:////tmp/unused-bench.db", guard=guard)
    t = min(timeit.repeat(lambda: app.encode_payload("job", payload), number=number, repeat=5))
    return t / number * 1e6


async def bulk(url: str, jobs: int, *, guard: bool, audit: bool) -> float:
    app = App(url, guard=guard, audit=audit)
    queue = app.queue(f"bench-{uuid.uuid4().hex[:8]}")
    try:
        await app.backend()
        started = time.perf_counter()
        await queue.add_bulk({"name": "noop", "data": {"n": n}} for n in range(jobs))
        return jobs / (time.perf_counter() - started)
    finally:
        await app.close()


async def drain(url: str, jobs: int, *, audit: bool) -> float:
    """Jobs/s of one worker (concurrency 50) running ``jobs`` no-op jobs."""
    app = App(url, audit=audit)
    name = f"bench-{uuid.uuid4().hex[:8]}"

    @app.job(queue=name, name=f"noop-{name}")
    async def noop(ctx: Any, n: int) -> None:
        return None

    queue = app.queue(name)
    try:
        await queue.add_bulk({"name": f"noop-{name}", "data": {"n": n}} for n in range(jobs))
        worker = app.worker([name], 50, burst=True, handle_signals=False, metrics=False)
        started = time.perf_counter()
        await worker.run()
        return worker.processed / (time.perf_counter() - started)
    finally:
        await app.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=None)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = args.url or f"sqlite:///{os.path.join(tempfile.mkdtemp(), 'sec.db')}"

    print("encode_payload, µs per job (guard off -> on):")
    for name, payload in PAYLOADS.items():
        off, on = encode_cost(False, payload), encode_cost(True, payload)
        print(f"  {name:8s} {off:6.2f} -> {on:6.2f}  (+{on - off:.2f} µs)")

    print(f"add_bulk of {args.jobs} jobs on {url.split('?')[0]}, best of {args.rounds}, jobs/s:")
    results: dict[tuple[bool, bool], float] = {}
    for _ in range(args.rounds):  # interleaved, so drift hits every variant alike
        for guard, audit in ((False, False), (True, False), (True, True)):
            rate = await bulk(url, args.jobs, guard=guard, audit=audit)
            results[guard, audit] = max(results.get((guard, audit), 0.0), rate)
    base = results[False, False]
    for (guard, audit), rate in results.items():
        label = f"guard={'on ' if guard else 'off'} audit={'on ' if audit else 'off'}"
        print(f"  {label} {rate:10.0f}  ({(rate / base - 1) * 100:+.1f} %)")

    print(f"worker draining {args.jobs // 4} jobs (concurrency 50), best of 3, jobs/s:")
    runs: dict[bool, float] = {}
    for _ in range(3):
        for audit in (False, True):
            runs[audit] = max(runs.get(audit, 0.0), await drain(url, args.jobs // 4, audit=audit))
    print(f"  audit=off {runs[False]:10.0f}")
    print(f"  audit=on  {runs[True]:10.0f}  ({(runs[True] / runs[False] - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    asyncio.run(main())
