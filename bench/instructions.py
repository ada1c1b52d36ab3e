"""Instructions per job, counted by valgrind: what the features cost, nearly free of noise.

    python bench/instructions.py --url redis://127.0.0.1:6390/0 [--jobs 4000] [--repeat 3]
                                 [--only metrics,events,guard,audit,runs] [--variants on,off]
                                 [--phases add_bulk,drain]

On a shared VM, wall-clock and CPU time swing by more from run to run than the features
cost (bench/README.md), so ``features.py`` cannot tell a 10 % cost from a 15 % one.
Instructions swing far less: this script runs each phase of ``features.py`` — a bulk add
of no-op jobs (``add_bulk``) and a burst worker's drain of them — in a fresh process
under callgrind, once with N jobs and once with 2N, and reports (count(2N) − count(N)) ÷
N, the instructions one more job costs that process (start-up and shutdown cancel out).
Runs of one tree still differ by about 1 % (how a drain's claims and completions fall
into batches depends on timing), so ``--repeat`` takes the median of several.

What it does not count: Redis (another process; ``features.py`` reads its CPU), and time
itself. Under valgrind a process runs about 50 times slower, so work done on a timer
(the metrics flush every second, the audit flush every 0.2 s) would run 50 times as
often per job; ``--stretch`` (default 50) lengthens those periods in the measured process
so that they run about as often per job as they do at full speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from features import FEATURES, Variant

PHASES = ("add_bulk", "drain")
_COLLECTED = re.compile(r"Collected : (\d+)")


async def child(args: argparse.Namespace) -> None:
    """One phase of one variant, in this process: the one callgrind counts."""
    if args.stretch != 1:
        from shigoto import metrics
        from shigoto.security.audit import RunRecorder

        metrics.FLUSH_S *= args.stretch
        metrics.BEAT_S *= args.stretch
        RunRecorder.FLUSH_S *= args.stretch
    variant = Variant(args.url, set(args.only), args.queue)
    try:
        await variant.app.backend()
        if args.child == "add_bulk":
            await variant.add_bulk(args.jobs)
        else:
            await variant.drain(args.jobs, args.concurrency)
    finally:
        await variant.app.close()


def run(args: argparse.Namespace, on: list[str], phase: str, jobs: int) -> int:
    """Instructions of one phase with ``jobs`` jobs (a fresh queue; the other phase is
    run at full speed, before it to fill the queue or after it to empty the queue).
    ``phase`` "none": both at full speed, nothing counted (0)."""
    queue = f"instr-{os.urandom(4).hex()}"
    script = [sys.executable, __file__, "--url", args.url, "--jobs", str(jobs)]
    script += ["--only", ",".join(on), "--queue", queue, "--concurrency", str(args.concurrency)]
    with tempfile.TemporaryDirectory() as tmp:
        callgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out"]
        count = None
        for step in PHASES:
            counted = step == phase
            command = [*callgrind, *script] if counted else script
            command += ["--child", step, "--stretch", str(args.stretch if counted else 1)]
            env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts every run
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
            if counted:
                found = _COLLECTED.search(done.stderr)
                if found is None:
                    raise SystemExit(f"no instruction count from callgrind:\n{done.stderr[-3000:]}")
                count = int(found[1])
    return count or 0


def main(args: argparse.Namespace) -> None:
    variants = {"on": list(args.only), "off": []}
    wanted = [(v, phase) for v in args.variants for phase in args.phases]
    sizes = (args.jobs, 2 * args.jobs)
    runs = [(v, phase, n, k) for v, phase in wanted for k in range(args.repeat) for n in sizes]
    print(
        f"counting {len(runs)} runs under callgrind, {args.parallel} at a time "
        f"(each takes a minute or more) ...",
        flush=True,
    )
    # a first run at full speed, so that none of the counted ones creates the schema
    # (SQLite) or anything else a backend makes once
    run(args, [], "none", 1)
    with ThreadPoolExecutor(args.parallel) as pool:
        counts = dict(
            zip(runs, pool.map(lambda r: run(args, variants[r[0]], r[1], r[2]), runs), strict=True)
        )  # (variant, phase, jobs, repetition) -> instructions
    per_job = {
        (v, phase): statistics.median(
            (counts[v, phase, 2 * args.jobs, k] - counts[v, phase, args.jobs, k]) / args.jobs
            for k in range(args.repeat)
        )
        for v, phase in wanted
    }
    print(f"features on: {', '.join(args.only) or 'none'}; N = {args.jobs:,}")
    print(
        f"instructions per job ((count(2N) - count(N)) / N, median of {args.repeat}; "
        f"timers stretched {args.stretch:g}x)"
    )
    if args.repeat > 1:
        for v, phase in wanted:
            each = [
                (counts[v, phase, 2 * args.jobs, k] - counts[v, phase, args.jobs, k]) / args.jobs
                for k in range(args.repeat)
            ]
            print(f"  {phase} features {v}: " + " / ".join(f"{x:,.0f}" for x in each))
    heads = "".join(f"{'features ' + v:>16}" for v in args.variants)
    print(f"{'phase':<10}{heads}      cost")
    for phase in args.phases:
        row = f"{phase:<10}" + "".join(f"{per_job[v, phase]:16,.0f}" for v in args.variants)
        if len(args.variants) == 2:
            row += f"   {100 * (per_job['on', phase] / per_job['off', phase] - 1):+6.1f} %"
        print(row)
    line = f"reproduce  python bench/instructions.py --url {args.url} --jobs {args.jobs}"
    line += f" --repeat {args.repeat}"
    line += f" --only {','.join(args.only)} --variants {','.join(args.variants)}"
    print(f"{line} --phases {','.join(args.phases)}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=4000, help="N (default 4000)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--only",
        type=lambda text: [f for f in text.split(",") if f],
        default=[f for f in FEATURES if f != "runs"],
        help=f"features of the 'on' variant, comma-separated (default: all of {FEATURES})",
    )
    parser.add_argument(
        "--variants",
        type=lambda text: [v for v in text.split(",") if v],
        default=["on", "off"],
        help="which variants to count: on, off or both (default)",
    )
    parser.add_argument(
        "--phases",
        type=lambda text: [p for p in text.split(",") if p],
        default=list(PHASES),
        help=f"which phases to count (default: both of {PHASES})",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="count each run this many times (the median)"
    )
    parser.add_argument("--stretch", type=float, default=50.0, help="timer periods × this")
    parser.add_argument(
        "--parallel", type=int, default=None, help="runs at a time (default: CPUs; SQLite: 1)"
    )
    parser.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if unknown := set(args.only) - set(FEATURES):
        parser.error(f"unknown feature(s) {sorted(unknown)}; known: {FEATURES}")
    if not args.variants or set(args.variants) - {"on", "off"}:
        parser.error("--variants takes on, off or on,off")
    if not args.phases or set(args.phases) - set(PHASES):
        parser.error(f"--phases takes {', '.join(PHASES)} or both, comma-separated")
    if args.jobs < 1 or args.repeat < 1:
        parser.error("--jobs and --repeat must be at least 1")
    if args.parallel is None:
        # SQLite: concurrent runs would wait on each other's write locks, and waiting
        # (retrying) costs instructions
        args.parallel = 1 if args.url.startswith("sqlite") else (os.cpu_count() or 1)
    return args


if __name__ == "__main__":
    parsed = parse()
    if parsed.child:
        asyncio.run(child(parsed))
    elif not any((Path(d) / "valgrind").exists() for d in os.get_exec_path()):
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    else:
        main(parsed)
