"""Soak: a mixed workload against Redis for N minutes, two worker processes, one of them
killed (SIGKILL) and restarted periodically; then the fault suite's accounting.

    python bench/soak.py --minutes 5 [--rate 20] [--kill-every 30] [--url redis://...]

Without ``--url`` a redis-server of its own is started on a free loopback port (AOF,
fsync always) so ``used_memory`` measures this run alone. Workers are
``tests/faults/worker_proc.py``: every run of a handler is written to a separate SQLite
ledger, the ground truth the accounting (``tests/faults/_accounting.py``) checks
shigoto's records against.

Workload, per second (``--rate`` jobs): immediate short jobs (60 %), delayed 1-10 s
(10 %), failing once then succeeding (10 %), always failing with 2 attempts (5 %,
ending dead ``retries_exhausted``), long 2-4 s jobs reporting progress (15 %).

Worker slot 0 lives the whole run (its RSS over time shows whether a worker leaks);
slot 1 is killed every ``--kill-every`` seconds and restarted. Every 15 s a line of
RSS per worker and Redis ``used_memory``; at the end the accounting and a summary.
Cron is not part of the mix (worker_proc runs no scheduler).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from backends.redis.servers import RedisServer  # noqa: E402
from faults._procs import (  # noqa: E402
    Cluster,
    WorkerProcess,
    make_cluster,
    settle_and_check,
)
from faults.worker_proc import QUEUE  # noqa: E402
from shigoto import App  # noqa: E402

WORKER = {"concurrency": 16, "lease": 5.0, "stall_check": 1.0, "grace": 5.0}


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pick(rng: random.Random, n: int) -> dict[str, Any]:
    """One job of the mix: its data (and options)."""
    roll = rng.random()
    data: dict[str, Any] = {"n": n}
    options: dict[str, Any] = {}
    if roll < 0.60:
        data["sleep"] = rng.uniform(0.005, 0.05)
    elif roll < 0.70:
        data["sleep"] = 0.01
        options["delay"] = rng.uniform(1, 10)
    elif roll < 0.80:
        data["fail_until"] = 1
        options["backoff"] = 0.5
    elif roll < 0.85:
        data["fail_always"] = True
        options.update(attempts=2, backoff=0.5)
    else:
        data.update(sleep=rng.uniform(2, 4), progress=5)
    return {"name": "effect", "data": data, **options}


async def soak(args: argparse.Namespace, server: RedisServer | None, tmp: Path) -> int:
    url = args.url or (server.url(f"soak-{uuid.uuid4().hex[:8]}") if server else "")
    cluster: Cluster = make_cluster(tmp, url)
    app = App(url, max_stalls=5)
    rng = random.Random(args.seed)
    slots: list[WorkerProcess] = [cluster.spawn(**WORKER) for _ in range(2)]
    killed: set[str] = set()
    ids: list[str] = []
    samples: list[tuple[float, int, int, int]] = []
    started = time.monotonic()
    end = started + args.minutes * 60
    next_kill = started + args.kill_every
    next_sample = started

    def used_memory() -> int:
        if server is None:
            return 0
        with server.client() as client:
            return int(client.info("memory")["used_memory"])

    try:
        n = 0
        while time.monotonic() < end:
            tick = time.monotonic()
            batch = [pick(rng, n + i) for i in range(args.rate)]
            n += len(batch)
            ids += [j.id for j in await app.queue(QUEUE).add_bulk(batch)]
            if tick >= next_kill:
                victim = slots[1]
                await asyncio.to_thread(victim.kill)
                killed.add(f"proc-{victim.pid}")
                slots[1] = cluster.spawn(**WORKER)
                next_kill += args.kill_every
            if tick >= next_sample:
                sample = (
                    tick - started,
                    rss_kib(slots[0].pid),
                    rss_kib(slots[1].pid),
                    await asyncio.to_thread(used_memory),
                )
                samples.append(sample)
                counts = await app.queue(QUEUE).counts()
                print(
                    f"t={sample[0]:6.0f}s rss0={sample[1]} KiB rss1={sample[2]} KiB "
                    f"redis used_memory={sample[3]} B enqueued={len(ids)} counts={counts}",
                    flush=True,
                )
                next_sample += 15
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        print("enqueueing stopped; waiting for every job to settle", flush=True)
        report = await settle_and_check(
            app,
            cluster,
            ids,
            timeout=120,
            faulted=killed,
            dead_reasons={"retries_exhausted", "stalled_too_often"},
        )
        final = (time.monotonic() - started, rss_kib(slots[0].pid), rss_kib(slots[1].pid))
        memory = await asyncio.to_thread(used_memory)
    finally:
        await app.close()
        await asyncio.to_thread(cluster.stop_all)

    alive_all_run = slots[0]
    first = samples[1] if len(samples) > 1 else samples[0]
    print("--- soak summary")
    print(f"minutes={args.minutes} rate={args.rate}/s kills={len(killed)} seed={args.seed}")
    print(f"accounting: {report}")
    print(
        f"worker 0 (pid {alive_all_run.pid}, whole run) RSS: "
        f"{first[1]} KiB at t={first[0]:.0f}s -> {final[1]} KiB at t={final[0]:.0f}s"
    )
    print(
        f"redis used_memory: {samples[0][3]} B at start -> {memory} B at the end "
        f"({(memory - samples[0][3]) / max(1, len(ids)):.0f} B per job kept)"
    )
    print("exact command: " + shlex.join([sys.executable, *sys.argv]))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=20, help="jobs enqueued per second")
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--url", help="a Redis URL (default: a redis-server of its own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shigoto-soak-") as tmp:
        server = None if args.url else RedisServer(Path(tmp) / "redis", appendonly=True).start()
        try:
            return asyncio.run(soak(args, server, Path(tmp)))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    sys.exit(main())
