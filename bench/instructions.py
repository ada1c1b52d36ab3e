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

With ``--server`` (Redis URLs), each run also gets its own ``redis-server`` on a free
loopback port, under callgrind too, counted from just before the counted phase to just
after it: the work a job costs the server (its scripts, the audit stream, the metrics
flush), which ``features.py``'s CPU column includes (``INFO cpu``) and a job queue's
users pay for as much as for the worker. The server runs with ``hz 1``, so its timer
work (about 10 times a second by default, and now 50 times as long) stays out of the
count as far as it can.

What it does not count: time itself. Under valgrind a process runs about 50 times
slower, so work done on a timer (the metrics flush every second, the audit flush every
0.2 s) would run 50 times as often per job; ``--stretch`` (default 50) lengthens those
periods in the measured process so that they run about as often per job as they do at
full speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from features import FEATURES, Variant

PHASES = ("add_bulk", "drain")
_COLLECTED = re.compile(r"Collected : (\d+)")
_SUMMARY = re.compile(r"^summary: (\d+)", re.MULTILINE)


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


class CountedServer:
    """A private ``redis-server`` under callgrind on a free loopback port: :meth:`zero`
    before the counted phase, :meth:`count` after it (``callgrind_control``)."""

    def __init__(self, tmp: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.out = f"{tmp}/server"
        self.log = Path(tmp) / "server.log"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}"]
        command += ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--hz", "1", "--save", "", "--appendonly", "no", "--dir", tmp]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(
                    f"redis-server under callgrind did not start:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _control(self, option: str) -> None:
        command = ["callgrind_control", option, str(self.process.pid)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or "OK" not in done.stdout:
            raise SystemExit(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")

    def zero(self) -> None:
        self._control("--zero")

    def count(self) -> int:
        """Instructions since :meth:`zero` (a dump: ``<out>.1``)."""
        self._control("--dump")
        found = _SUMMARY.search(Path(f"{self.out}.1").read_text())
        if found is None:
            raise SystemExit(f"no instruction count in the dump of redis-server at {self.out}.1")
        return int(found[1])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def run(args: argparse.Namespace, on: list[str], phase: str, jobs: int) -> tuple[int, int]:
    """Instructions of one phase with ``jobs`` jobs, in the Python process and (with
    ``--server``) in Redis (a fresh queue; the other phase is run at full speed, before
    it to fill the queue or after it to empty the queue). ``phase`` "none": both at full
    speed, nothing counted."""
    queue = f"instr-{os.urandom(4).hex()}"
    with tempfile.TemporaryDirectory() as tmp:
        server = CountedServer(tmp) if args.server else None
        try:
            url = server.url if server else args.url
            script = [sys.executable, __file__, "--url", url, "--jobs", str(jobs)]
            script += ["--only", ",".join(on), "--queue", queue]
            script += ["--concurrency", str(args.concurrency)]
            callgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out"]
            count, server_count = 0, 0
            for step in PHASES:
                counted = step == phase
                if counted and server:
                    server.zero()
                elif server and count:
                    break  # nothing left to clean up: the server goes with its data
                command = [*callgrind, *script] if counted else script
                command += ["--child", step, "--stretch", str(args.stretch if counted else 1)]
                env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts every run
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
                if counted:
                    found = _COLLECTED.search(done.stderr)
                    if found is None:
                        raise SystemExit(
                            f"no instruction count from callgrind:\n{done.stderr[-3000:]}"
                        )
                    count = int(found[1])
                    if server:
                        server_count = server.count()
        finally:
            if server:
                server.close()
    return count, server_count


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
    if not args.server:
        # a first run at full speed, so that none of the counted ones creates the schema
        # (SQLite) or anything else a backend makes once (a private server starts empty
        # in every run: what it makes once is made in both N and 2N, and cancels)
        run(args, [], "none", 1)
    with ThreadPoolExecutor(args.parallel) as pool:
        counts = dict(
            zip(runs, pool.map(lambda r: run(args, variants[r[0]], r[1], r[2]), runs), strict=True)
        )  # (variant, phase, jobs, repetition) -> (worker's instructions, server's)
    parts = ("worker", "redis", "both") if args.server else ("worker",)

    def each(v: str, phase: str, part: str) -> list[float]:
        def of(n: int, k: int) -> int:
            worker, server = counts[v, phase, n, k]
            return {"worker": worker, "redis": server, "both": worker + server}[part]

        return [(of(2 * args.jobs, k) - of(args.jobs, k)) / args.jobs for k in range(args.repeat)]

    print(f"features on: {', '.join(args.only) or 'none'}; N = {args.jobs:,}")
    print(
        f"instructions per job ((count(2N) - count(N)) / N, median of {args.repeat}; "
        f"timers stretched {args.stretch:g}x)"
    )
    if args.repeat > 1:
        for v, phase in wanted:
            for part in parts:
                runs_of = " / ".join(f"{x:,.0f}" for x in each(v, phase, part))
                print(f"  {_label(phase, part)} features {v}: {runs_of}")
    heads = "".join(f"{'features ' + v:>16}" for v in args.variants)
    print(f"{'phase':<16}{heads}      cost")
    for phase in args.phases:
        for part in parts:
            per_job = {v: statistics.median(each(v, phase, part)) for v in args.variants}
            row = f"{_label(phase, part):<16}" + "".join(f"{per_job[v]:16,.0f}" for v in per_job)
            if len(per_job) == 2:
                row += f"   {100 * (per_job['on'] / per_job['off'] - 1):+6.1f} %"
            print(row)
    line = f"reproduce  python bench/instructions.py --url {args.url} --jobs {args.jobs}"
    line += f" --repeat {args.repeat}" + (" --server" if args.server else "")
    line += f" --only {','.join(args.only)} --variants {','.join(args.variants)}"
    print(f"{line} --phases {','.join(args.phases)}")


def _label(phase: str, part: str) -> str:
    """A table row's name: the phase for the worker's own count, else ``phase:part``."""
    return phase if part == "worker" else f"{phase}:{part}"


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
    parser.add_argument(
        "--server",
        action="store_true",
        help="Redis: count a private redis-server's instructions too (it runs under callgrind)",
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
    if args.server and not args.url.startswith(("redis://", "rediss://")):
        parser.error("--server counts a private redis-server: it needs a redis:// URL")
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
    elif parsed.server and not any((Path(d) / "redis-server").exists() for d in os.get_exec_path()):
        raise SystemExit("--server runs redis-server, which is not on PATH: apt-get install redis")
    else:
        main(parsed)
