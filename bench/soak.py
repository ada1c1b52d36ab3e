"""Soak: a mixed workload against Redis for N minutes, two worker processes and two
scheduler processes, one of each killed (SIGKILL) and restarted periodically; then the
fault suite's accounting, the tick accounting, and a leak verdict.

    python bench/soak.py --minutes 10 [--rate 20] [--kill-every 30] [--seed 10] [--url redis://...]

Without ``--url`` a redis-server of its own is started on a free loopback port (AOF,
fsync always) so ``used_memory`` measures this run alone. Workers and schedulers are
``tests/faults/worker_proc.py``: every run of a handler is written to a separate SQLite
ledger, the ground truth the accounting (``tests/faults/_accounting.py``) checks
shigoto's records against; every tick a scheduler wins is written there too.

Workload, per second (``--rate`` jobs): immediate short jobs (60 %), delayed 1-10 s
(10 %), failing once then succeeding (10 %), always failing with 2 attempts (5 %,
ending dead ``retries_exhausted``), long 2-4 s jobs reporting progress (15 %) — and
**cron**: an every-``--tick-every``-seconds schedule fired by ``--schedulers``
scheduler processes at once (default 2, so each tick is contested).

Slot 0 of each kind lives the whole run (its RSS over time shows whether a process
leaks); slot 1 is killed every ``--kill-every`` seconds and restarted (schedulers half
a period after workers). Every ``--sample-every`` seconds: RSS of every process and
Redis ``used_memory``.

At the end:

* **jobs**: every enqueued job and every tick's job is completed or dead with an
  expected reason, and ran more than once only when a kill explains it;
* **ticks**: every tick of the run claimed by exactly one scheduler, has exactly one
  job (a missing one only where the misfire policy explains it: no scheduler ran
  within its grace), and that job completed;
* **leak verdict** per series: the median of the last third of the run against the
  median of the middle third (the first third is warm-up), leaving out samples taken
  within ``RESTART_SETTLE_S`` of a restart of that process (or, for Redis, of a worker
  kill), with the slope per minute: *flat* unless the last third is higher by more than
  a tolerance (a leak grows; a series that falls is flat for this purpose). Redis keeps
  every finished job here (the accounting needs them) and an audit entry per enqueue
  (the audit trail: capped, pruned by age), and adds a metric bucket per minute (kept
  24 h), so raw ``used_memory`` grows by design. Each sample also measures those keys
  (``MEMORY USAGE``, grouped by kind), and the verdict is on the **rest**:
  ``used_memory`` minus the job keys, the audit stream, the metric buckets and client
  buffers (``mem_clients_normal``: they swing by hundreds of KB with the replies in
  flight) — scripts, schedules, worker beats, queue metadata, lifetime totals,
  allocator overhead — which must stay flat. At the very end every job is removed and
  the script prints what is left in Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from backends.redis.servers import RedisServer  # noqa: E402
from faults._accounting import check_ticks, ledger, tick_claims  # noqa: E402
from faults._procs import (  # noqa: E402
    Cluster,
    WorkerProcess,
    all_records,
    make_cluster,
    settle_and_check,
)
from faults.worker_proc import QUEUE, TICK_SCHEDULE  # noqa: E402
from shigoto import App  # noqa: E402
from shigoto.schedule import TICK_PREFIX  # noqa: E402

WORKER = {"concurrency": 16, "lease": 5.0, "stall_check": 1.0, "grace": 5.0}
RESTART_SETTLE_S = 10.0
"""Samples this soon after a (re)start of a process are left out of its verdict."""
RSS_TOLERANCE = 0.03
"""RSS is flat unless the last third's median is over 3 % above the middle third's."""
REDIS_TOLERANCE = 0.10
"""The Redis rest (see above) is flat unless its last third is over 10 % above its middle
(``MEMORY USAGE`` of a growing hash is an estimate that moves by ~100 KB)."""
JOB_KINDS = frozenset(
    {"jobs", "data", "errors", "progress", "result"}
    | {"wait", "delayed", "active", "completed", "dead", "cancelled"}
)
"""Keys of a queue that hold jobs or index them: they grow with the jobs stored."""


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


# -- processes -----------------------------------------------------------------------------


@dataclass
class Slot:
    """One place for a process (``worker-1``...): the current process and its history."""

    name: str
    spawn: Callable[[], WorkerProcess]
    proc: WorkerProcess = field(init=False)
    started_s: float = 0.0
    restarts_s: list[float] = field(default_factory=list)
    lives_wall_ms: list[tuple[int, int | None]] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    """Worker ids (``proc-<pid>``) of the processes killed in this slot."""

    def start(self, t: float) -> None:
        self.proc = self.spawn()
        self.started_s = t
        self.lives_wall_ms.append((int(time.time() * 1000), None))

    def restart(self, t: float) -> None:
        self.proc.kill()
        self.killed.append(f"proc-{self.proc.pid}")
        start, _ = self.lives_wall_ms[-1]
        self.lives_wall_ms[-1] = (start, int(time.time() * 1000))
        self.restarts_s.append(t)
        self.start(t)

    def ended(self) -> None:
        start, end = self.lives_wall_ms[-1]
        if end is None:
            self.lives_wall_ms[-1] = (start, int(time.time() * 1000))


# -- the leak verdict ----------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """Middle third against last third of one series (the first third is warm-up)."""

    name: str
    unit: str
    middle: float
    last: float
    per_min: float
    samples: int
    flat: bool
    scale: float
    """What the tolerance is relative to (the middle median, or ``used_memory``)."""

    def __str__(self) -> str:
        change = (self.last - self.middle) / self.scale if self.scale else 0.0
        verdict = "flat" if self.flat else "GROWING"
        return (
            f"{self.name}: {verdict}: median {self.middle:,.0f} -> {self.last:,.0f} {self.unit} "
            f"({change:+.2%}), slope {self.per_min:+,.0f} {self.unit}/min "
            f"({self.samples} samples)"
        )


def trend(
    name: str,
    points: list[tuple[float, float]],
    *,
    end_s: float,
    unit: str,
    tolerance: float,
    skip: Sequence[float] = (),
    scale: float | None = None,
) -> Trend | None:
    """The verdict on one series of ``(t, value)``: flat unless the last third's median
    exceeds the middle third's by more than ``tolerance`` (a fraction of ``scale``,
    default the middle median). ``skip``: restart times; samples within ``RESTART_SETTLE_S`` after
    one are left out. Medians, not means, so one GC pause or burst does not decide."""
    third = end_s / 3
    kept = [(t, v) for t, v in points if not any(0 <= t - r < RESTART_SETTLE_S for r in skip)]
    middle = [(t, v) for t, v in kept if third <= t < 2 * third]
    last = [(t, v) for t, v in kept if t >= 2 * third]
    if len(middle) < 3 or len(last) < 3:
        return None
    m1 = statistics.median(v for _, v in middle)
    m2 = statistics.median(v for _, v in last)
    t1 = statistics.median(t for t, _ in middle)
    t2 = statistics.median(t for t, _ in last)
    base = scale if scale is not None else abs(m1)
    return Trend(
        name=name,
        unit=unit,
        middle=m1,
        last=m2,
        per_min=(m2 - m1) / max(1e-9, (t2 - t1) / 60),
        samples=len(middle) + len(last),
        flat=m2 - m1 <= tolerance * base,
        scale=base,
    )


def unscheduled_ms(slots: list[Slot], since_ms: int, until_ms: int) -> list[tuple[int, int]]:
    """Wall-clock intervals within ``[since_ms, until_ms)`` when no scheduler ran."""
    lives = sorted(
        (start, until_ms if end is None else end)
        for slot in slots
        for start, end in slot.lives_wall_ms
    )
    out: list[tuple[int, int]] = []
    at = since_ms
    for start, end in lives:
        if start > at:
            out.append((at, start))
        at = max(at, end)
    if at < until_ms:
        out.append((at, until_ms))
    return out


# -- the run --------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, server: RedisServer | None, tmp: Path) -> int:
    url = args.url or (server.url(f"soak-{uuid.uuid4().hex[:8]}") if server else "")
    cluster: Cluster = make_cluster(tmp, url)
    app = App(url, max_stalls=5)
    rng = random.Random(args.seed)
    workers = [Slot(f"worker-{i}", lambda: cluster.spawn(**WORKER)) for i in range(2)]
    schedulers = [
        Slot(f"scheduler-{i}", lambda: cluster.spawn(schedule_every=args.tick_every))
        for i in range(args.schedulers)
    ]
    slots = workers + schedulers
    for slot in slots:
        slot.start(0.0)
    ids: list[str] = []
    rss: dict[str, list[tuple[float, float]]] = {s.name: [] for s in slots}
    memory: list[tuple[float, int, int, dict[str, int]]] = []  # t, used, jobs, by kind
    started = time.monotonic()
    end = started + args.minutes * 60
    kills = {workers[1].name: args.kill_every}
    if len(schedulers) > 1:
        kills[schedulers[1].name] = args.kill_every * 1.5
    next_sample = 0.0
    printed = 0

    try:
        n = 0
        while time.monotonic() < end:
            tick = time.monotonic()
            batch = [pick(rng, n + i) for i in range(args.rate)]
            n += len(batch)
            ids += [j.id for j in await app.queue(QUEUE).add_bulk(batch)]
            t = tick - started
            for slot in slots:
                if slot.name in kills and t >= kills[slot.name]:
                    await asyncio.to_thread(slot.restart, t)
                    kills[slot.name] += args.kill_every
            if t >= next_sample:
                counts = await app.queue(QUEUE).counts()
                used, kinds = await asyncio.to_thread(redis_memory, server)
                memory.append((t, used, sum(counts.values()), kinds))
                for slot in slots:
                    rss[slot.name].append((t, rss_kib(slot.proc.pid)))
                if t >= printed:
                    line = " ".join(f"{s.name}={rss_kib(s.proc.pid)}" for s in slots)
                    print(
                        f"t={t:5.0f}s RSS KiB {line} redis used_memory={used} B "
                        f"enqueued={len(ids)} counts={counts}",
                        flush=True,
                    )
                    printed += 15
                next_sample += args.sample_every
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        run_s = time.monotonic() - started
        print("enqueueing stopped; stopping the schedulers, then waiting for every job")
        for slot in schedulers:
            slot.proc.terminate()
        for slot in schedulers:
            await asyncio.to_thread(slot.proc.proc.wait, 30)
            slot.ended()
        stopped_ms = int(time.time() * 1000)
        backend = await app.backend()
        state = next(s for s in await backend.schedule_states() if s.name == TICK_SCHEDULE)
        assert state.last_fire_ms is not None, "the schedule never fired"
        tick_ids = [i for i in await all_records(app) if i.startswith(TICK_PREFIX)]
        faulted = {k for s in workers for k in s.killed}
        report = await settle_and_check(
            app,
            cluster,
            ids + tick_ids,
            timeout=120,
            faulted=faulted,
            dead_reasons={"retries_exhausted", "stalled_too_often"},
        )
        records = await all_records(app)
        ticks = check_ticks(
            TICK_SCHEDULE,
            every_ms=round(args.tick_every * 1000),
            since_ms=state.since_ms,
            last_fire_ms=state.last_fire_ms,
            claims=await asyncio.to_thread(tick_claims, cluster.effects),
            records=records,
            runs=await asyncio.to_thread(ledger, cluster.effects),
            unscheduled=unscheduled_ms(schedulers, state.since_ms, stopped_ms + 3_600_000),
            scheduler_kills_ms=[end for s in schedulers for _, end in s.lives_wall_ms[:-1] if end],
        )
        final_rss = {s.name: rss_kib(s.proc.pid) for s in workers}
        before, _ = await asyncio.to_thread(redis_memory, server)
        removed = await remove_all(app, list(records))
        after, leftovers = await asyncio.to_thread(redis_memory, server)
        overhead = await asyncio.to_thread(redis_overhead, server)
    finally:
        await app.close()
        await asyncio.to_thread(cluster.stop_all)

    worker_kills = [r for s in workers for r in s.restarts_s]
    trends = [
        trend(
            f"{s.name} RSS" + (" (whole run)" if not s.restarts_s else " (restarted)"),
            rss[s.name],
            end_s=run_s,
            unit="KiB",
            tolerance=RSS_TOLERANCE,
            skip=[0.0, *s.restarts_s],
        )
        for s in slots
    ]
    trends.append(
        trend(
            "redis used_memory (raw; grows by design, see below)",
            [(t, u) for t, u, _, _ in memory],
            end_s=run_s,
            unit="B",
            tolerance=REDIS_TOLERANCE,
            skip=worker_kills,
        )
    )
    trends.append(
        trend(
            "redis rest (used_memory - job keys, audit, metric buckets, client buffers)",
            [(t, u - sum(k.get(g, 0) for g in GROWING)) for t, u, _, k in memory],
            end_s=run_s,
            unit="B",
            tolerance=REDIS_TOLERANCE,
            skip=worker_kills,
        )
    )
    if args.samples:
        Path(args.samples).write_text(
            json.dumps(
                {
                    "run_s": run_s,
                    "rss": rss,
                    "memory": memory,
                    "slots": {s.name: s.restarts_s for s in slots},
                }
            )
        )
    print("--- soak summary")
    kills_n = {s.name: len(s.restarts_s) for s in slots if s.restarts_s}
    print(
        f"minutes={args.minutes} rate={args.rate}/s kills={kills_n} seed={args.seed} "
        f"schedulers={args.schedulers} tick every {args.tick_every:g} s"
    )
    print(f"jobs: {report}")
    print(f"ticks ({TICK_SCHEDULE}): {ticks}")
    if ticks.unrecorded_ticks:
        kills = sorted(end for s in schedulers for _, end in s.lives_wall_ms[:-1] if end)
        after = [min((k - f for k in kills if k >= f), default=-1) for f in ticks.unrecorded_ticks]
        print(f"  claims lost with a killed scheduler: killed {after} ms after the tick")
    print(f"leak verdict (middle vs last third of {run_s / 60:.1f} min; first third warm-up):")
    for item in trends:
        print(f"  {item}" if item else "  (too few samples for a verdict)")
    for s in workers:
        first = next((v for t, v in rss[s.name] if t >= RESTART_SETTLE_S), 0)
        print(
            f"  {s.name} RSS {first:,.0f} KiB at {RESTART_SETTLE_S:.0f} s "
            f"-> {final_rss[s.name]:,} KiB at the end"
        )
    if memory and server is not None:
        (t0, u0, _, k0), (t1, _, j1, k1) = memory[0], memory[-1]
        minutes = max(1e-9, (t1 - t0) / 60)
        print(
            f"redis used_memory {u0:,} B at start -> {before:,} B with {removed:,} jobs "
            f"stored -> {after:,} B after removing every job"
        )
        print(
            f"  by design: job keys {k1.get('jobs', 0) / max(1, j1):,.0f} B per stored job; "
            f"audit stream {(k1.get('audit', 0) - k0.get('audit', 0)) / minutes:+,.0f} B/min; "
            f"metric buckets {(k1.get('metrics', 0) - k0.get('metrics', 0)) / minutes:+,.0f} "
            "B/min"
        )
        print(
            "  left after removing every job: "
            + ", ".join(
                f"{kind} {size:,} B"
                for kind, size in sorted(leftovers.items())
                if kind != "clients"
            )
        )
        print("  besides keys: " + ", ".join(f"{k} {v:,} B" for k, v in overhead.items()))
    print("exact command: " + shlex.join([sys.executable, *sys.argv]))
    decisive = [t for t, s in zip(trends, slots, strict=False) if not s.restarts_s]
    decisive.append(trends[-1])  # the rest (raw used_memory grows by design here)
    return 0 if all(t is None or t.flat for t in decisive) else 1


async def remove_all(app: App, job_ids: list[str]) -> int:
    """Delete every job of the run (none is active any more); returns how many."""
    backend = await app.backend()
    now = app.clock.now_ms()
    removed = 0
    for begin in range(0, len(job_ids), 200):
        part = job_ids[begin : begin + 200]
        done = await asyncio.gather(*(backend.remove(QUEUE, i, now_ms=now) for i in part))
        removed += sum(done)
    return removed


GROWING = ("jobs", "audit", "metrics", "clients")
"""What grows (or swings) by design while the soak keeps every job."""


def redis_memory(server: RedisServer | None) -> tuple[int, dict[str, int]]:
    """``used_memory``, and the bytes of the run's keys grouped by kind: ``jobs`` (a
    queue's job hashes and state indexes), ``audit``, ``metrics`` (buckets), and every
    other kind under its own name (the part of the key after the hash tag); and
    ``clients``: the client buffers (``mem_clients_normal``). The run's
    own server holds a few dozen keys (jobs live in per-queue hashes), so a ``SCAN``
    and one ``MEMORY USAGE`` per key are cheap."""
    if server is None:
        return 0, {}
    kinds: Counter[str] = Counter()
    with server.client() as client:
        for key in client.scan_iter(count=1000):
            tail = key.decode(errors="replace").split("}", 1)[-1].lstrip(":")
            kind = tail.split(":", 1)[0] or "(tag)"
            kind = "jobs" if kind in JOB_KINDS else kind
            kinds[kind] += int(client.memory_usage(key, samples=0) or 0)
        info = client.info("memory")
        kinds["clients"] = int(info["mem_clients_normal"])
        return int(info["used_memory"]), dict(kinds)


def redis_overhead(server: RedisServer | None) -> dict[str, int]:
    """What ``used_memory`` holds besides keys (``INFO memory``)."""
    if server is None:
        return {}
    with server.client() as client:
        info = client.info("memory")
    fields = (
        "used_memory_startup",
        "mem_clients_normal",
        "used_memory_scripts",
        "mem_aof_buffer",
        "mem_replication_backlog",
        "used_memory_dataset",
        "used_memory_overhead",
    )
    return {name: int(info[name]) for name in fields if name in info}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=20, help="jobs enqueued per second")
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--schedulers", type=int, default=2)
    parser.add_argument("--tick-every", type=float, default=1.0, help="schedule interval (s)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS / memory (s)")
    parser.add_argument("--samples", help="write every sample to this JSON file")
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
