"""Side by side: shigoto and its Python peers on the same local Redis, in one run.

    python bench/compare.py [--rounds 3] [--jobs 20000] [--only shigoto,huey] [--skip celery]
    python bench/compare.py --sqlite          # shigoto's SQLite backend vs huey's SqliteHuey
    python bench/compare.py --amqp            # shigoto's RabbitMQ backend vs dramatiq, celery

Peers come from the bench-only virtualenv ``bench/.venv-peers`` (``make bench`` builds it
from ``bench/requirements-peers.txt``); run this script with any Python, it runs every
measurement with that venv's interpreter when it exists (``--python`` to choose).

One measurement of one library is a child process (``--one NAME``) that imports
``bench/peers/NAME.py`` (see ``bench/peers/__init__.py`` for its interface) and:

1. **enqueue**: enqueues ``--jobs`` no-op jobs (bulk where the library has it, else a
   loop), timed from the first call to the last acknowledgement;
2. **process**: starts one worker process on that backlog (the library's own worker CLI
   at its best documented concurrency); the no-op handler notes the wall-clock time
   of the first job's start and of the last job's end, so interpreter start-up and
   imports are excluded: jobs / (last end - first start);
3. **latency**: ``--probes`` jobs, one every ``--interval-ms``, each carrying its send
   time, then ``--idle-samples`` jobs each after 1 to 1.5 ``--idle-gap`` (random) of silence:
   enqueue -> start p50 / p99 at low load, and p50 of the idle pickups;

then stops the worker and deletes the Redis keys it created (a dedicated database,
``--db``, default 12, and a fresh name per measurement), and in ``--amqp`` mode the
broker queues and per-run exchanges it declared (``--amqp-url``). Each round runs every library
once, in an order rotated by one each round; the tables show the median of the rounds,
and shigoto's ratio to each peer is the median of the per-round ratios (both measured
in the same round, so a busy machine disturbs them less than absolute figures).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent
PEERS_PYTHON = BENCH / ".venv-peers" / "bin" / "python"
LIBRARIES = ["shigoto", "arq", "rq", "dramatiq", "celery", "saq", "taskiq", "huey", "bullmq"]
SQLITE_LIBRARIES = ["shigoto", "huey"]
# shigoto over a Redis record store, shigoto-bare store-less (RabbitMQ alone).
AMQP_LIBRARIES = ["shigoto", "shigoto-bare", "dramatiq", "celery"]
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
# (key, column title, higher is better)
METRICS = [
    ("enqueue", "enqueue jobs/s", True),
    ("process", "process jobs/s", True),
    ("p50", "latency p50 ms", False),
    ("p99", "latency p99 ms", False),
    ("idle", "idle pickup p50 ms", False),
]


# -- one measurement of one library (a child process) --------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=f"compare-{args.one}-"))
    ns = f"cmp-{args.one}-{os.urandom(4).hex()}"
    os.environ.update(
        BENCH_NS=ns,
        BENCH_REDIS=f"{args.redis}/{args.db}",
        BENCH_SQLITE=str(out / "jobs.db") if args.sqlite else "",
        BENCH_AMQP=args.amqp_url if args.amqp else "",
        BENCH_OUT=str(out),
        BENCH_JOBS=str(args.jobs),
        BENCH_PROBES=str(args.probes + args.idle_samples),
    )
    sys.path.insert(0, str(BENCH))
    peer = importlib.import_module(f"peers.{args.one.replace('-', '_')}")
    try:
        await peer.connect()
        started = time.perf_counter()
        await peer.enqueue_many(args.jobs)
        enqueue_s = time.perf_counter() - started
        worker = start_worker(peer, out)
        try:
            bulk = await wait_for(out / "bulk.json", worker, out, args.timeout)
            await asyncio.sleep(1.0)
            idle_from = await send_probes(peer, args)
            probes = await wait_for(out / "probes.json", worker, out, 60 + args.probes / 10)
        finally:
            stop(worker)
    finally:
        await peer.close()
        if not args.sqlite:
            delete_keys(os.environ["BENCH_REDIS"], [*peer.KEYS, f"*{ns}*"])
        if args.amqp:
            queues = getattr(peer, "AMQP_QUEUES", [])
            await delete_amqp(args.amqp_url, queues, getattr(peer, "AMQP_EXCHANGES", []))
        shutil.rmtree(out, ignore_errors=True)
    load = [(start - sent) / 1e6 for sent, start in probes if sent < idle_from]
    idle = [(start - sent) / 1e6 for sent, start in probes if sent >= idle_from]
    process_s = max(bulk["last"] - bulk["first"], 1) / 1e9
    return {
        "enqueue": args.jobs / enqueue_s,
        "process": args.jobs / process_s,
        "p50": statistics.median(load) if load else None,
        "p99": percentile(load, 99) if load else None,
        "idle": statistics.median(idle) if idle else None,
        "concurrency": peer.CONCURRENCY,
        "how": peer.ENQUEUE,
    }


def start_worker(peer: ModuleType, out: Path) -> subprocess.Popen[bytes]:
    path = os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    log = (out / "worker.log").open("wb")
    return subprocess.Popen(
        peer.worker_argv(),
        cwd=BENCH,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so stop() reaches its children
    )


async def wait_for(path: Path, worker: subprocess.Popen[bytes], out: Path, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}: {log_tail(out)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {path.name} after {timeout:.0f} s: {log_tail(out)}")
        await asyncio.sleep(0.01)
    return json.loads(path.read_text())


def log_tail(out: Path) -> str:
    lines = (out / "worker.log").read_text(errors="replace").strip().splitlines()
    return " | ".join(lines[-3:]) or "(worker printed nothing)"


async def send_probes(peer: ModuleType, args: argparse.Namespace) -> int:
    """Low-load probes on a fixed schedule, then idle ones; returns when idle ones began."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(args.probes):
        delay = start + n * args.interval_ms / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await peer.enqueue_one(time.time_ns())
    idle_from = time.time_ns()
    for _ in range(args.idle_samples):
        # A random 1 to 1.5 gaps, so probes do not land at one phase of a polling worker.
        await asyncio.sleep(args.idle_gap * random.uniform(1.0, 1.5))
        await peer.enqueue_one(time.time_ns())
    return idle_from


def stop(worker: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if worker.poll() is not None:
            return
        try:
            os.killpg(worker.pid, sig)
            worker.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def delete_keys(url: str, patterns: list[str]) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=1000))
            for i in range(0, len(keys), 1000):
                client.unlink(*keys[i : i + 1000])
    finally:
        client.close()


async def delete_amqp(url: str, queues: list[str], exchanges: list[str]) -> None:
    """Delete a measurement's broker queues (messages included) and exchanges.

    aio-pika: shigoto's ``amqp`` extra, so it is there wherever the shigoto modules run.
    Deleting a queue or an exchange that does not exist is not an error in RabbitMQ."""
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in exchanges:
            await channel.exchange_delete(name)
    finally:
        await connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# -- the driver ----------------------------------------------------------------------------


def run_child(library: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [args.python, str(Path(__file__).resolve()), "--one", library]
    command += ["--jobs", str(args.jobs), "--probes", str(args.probes)]
    command += ["--interval-ms", f"{args.interval_ms:g}", "--idle-samples", str(args.idle_samples)]
    command += ["--idle-gap", f"{args.idle_gap:g}", "--redis", args.redis, "--db", str(args.db)]
    command += ["--timeout", f"{args.timeout:g}", *(["--sqlite"] if args.sqlite else [])]
    command += ["--amqp", "--amqp-url", args.amqp_url] if args.amqp else []
    budget = args.timeout + 120 + args.probes / 10 + args.idle_samples * (args.idle_gap * 1.5 + 1)
    env = {**os.environ, "BENCH_CONCURRENCY": args.concurrency_of.get(library, "")}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=budget, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {budget:.0f} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return {"error": lines[-1][:300]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def ratios(
    rounds: list[dict[str, dict[str, Any]]], peers: list[str], ours_name: str = "shigoto"
) -> dict[str, dict[str, float | None]]:
    """shigoto ÷ peer per metric: the median over rounds of the same-round ratio."""
    table: dict[str, dict[str, float | None]] = {}
    for name in [*peers, "fastest peer"]:
        row: dict[str, float | None] = {}
        for key, _, higher in METRICS:
            values = []
            for results in rounds:
                ours = results.get(ours_name, {}).get(key)
                if name == "fastest peer":
                    theirs_all = [results[p].get(key) for p in peers if p in results]
                    present = [v for v in theirs_all if v]
                    theirs = (max if higher else min)(present) if present else None
                else:
                    theirs = results.get(name, {}).get(key)
                if ours and theirs:
                    values.append(ours / theirs)
            row[key] = statistics.median(values) if values else None
        table[name] = row
    return table


def machine(amqp_url: str | None = None) -> str:
    redis_version = "?"
    try:
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        redis_version = str(client.info("server")["redis_version"])
        client.close()
    except Exception:
        pass
    rabbitmq = f", RabbitMQ {rabbitmq_version(amqp_url)}" if amqp_url else ""
    return (
        f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), "
        f"Python {platform.python_version()}, Redis {redis_version}{rabbitmq}, "
        f"{platform.platform()}"
    )


def rabbitmq_version(url: str) -> str:
    """The broker's version, as it announces it when a connection opens."""

    async def ask() -> str:
        import aio_pika

        connection = await aio_pika.connect(url)
        try:
            properties = connection.transport.connection.server_properties
            return str(properties.get("version", "?"))
        finally:
            await connection.close()

    try:
        return asyncio.run(ask())
    except Exception:
        return "?"


def render(args: argparse.Namespace, libraries: list[str], rounds: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    backend = "SQLite" if args.sqlite else "RabbitMQ" if args.amqp else "Redis"
    figures = Table(title=f"{backend}: medians of {len(rounds)} round(s), {args.jobs:,} jobs")
    figures.add_column("library")
    for _, title, _ in METRICS:
        figures.add_column(title, justify="right")
    figures.add_column("concurrency / enqueue, or error")
    for library in libraries:
        runs = [r[library] for r in rounds if library in r and "error" not in r[library]]
        errors = [r[library]["error"] for r in rounds if "error" in r.get(library, {})]
        if not runs:
            figures.add_row(library, *[""] * len(METRICS), f"[red]error: {errors[0]}")
            continue
        cells = []
        for key, _, higher in METRICS:
            value = median_of(runs, key)
            cells.append("—" if value is None else f"{value:,.0f}" if higher else f"{value:.2f}")
        note = f"{runs[0]['concurrency']} / {runs[0]['how']}"
        if errors:
            note += f" ({len(errors)} round(s) failed: {errors[0]})"
        figures.add_row(library, *cells, note)
    console.print(figures)

    good = [lib for lib in libraries if any(lib in r and "error" not in r[lib] for r in rounds)]
    ours = [lib for lib in good if lib in ("shigoto", "shigoto-bare")]
    peers = [lib for lib in good if lib not in ours]
    for name in ours if peers else []:
        clean = [{k: v for k, v in r.items() if "error" not in v} for r in rounds]
        table = Table(
            title=f"{name} ÷ peer, median of same-round ratios",
            caption=f"throughput: > 1 means {name} is faster; latency: < 1 means {name} is faster",
        )
        table.add_column("peer")
        for _, title, _ in METRICS:
            table.add_column(title, justify="right")
        for peer, row in ratios(clean, peers, name).items():
            cells = ["—" if row[k] is None else f"{row[k]:.2f}" for k, _, _ in METRICS]
            table.add_row(peer, *cells)
        console.print(table)
    console.print(f"machine    {machine(args.amqp_url if args.amqp else None)}")
    console.print(f"reproduce  {reproduce(args)}", soft_wrap=True)


def reproduce(args: argparse.Namespace) -> str:
    parts = ["python", "bench/compare.py", "--rounds", str(args.rounds), "--jobs", str(args.jobs)]
    parts += ["--probes", str(args.probes), "--interval-ms", f"{args.interval_ms:g}"]
    parts += ["--idle-samples", str(args.idle_samples), "--idle-gap", f"{args.idle_gap:g}"]
    if args.only:
        parts += ["--only", args.only]
    if args.skip:
        parts += ["--skip", args.skip]
    if args.concurrency:
        parts += ["--concurrency", args.concurrency]
    if args.sqlite:
        parts.append("--sqlite")
    if args.amqp:
        parts.append("--amqp")
        if args.amqp_url != AMQP_URL:
            parts += ["--amqp-url", args.amqp_url]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20_000, help="backlog for enqueue/process")
    parser.add_argument("--only", default="", help="comma-separated libraries to run")
    parser.add_argument("--skip", default="", help="comma-separated libraries to leave out")
    parser.add_argument("--sqlite", action="store_true", help="shigoto SQLite vs SqliteHuey")
    parser.add_argument(
        "--amqp", action="store_true", help="shigoto RabbitMQ vs dramatiq and celery on RabbitMQ"
    )
    parser.add_argument("--amqp-url", default=AMQP_URL, help="RabbitMQ for --amqp")
    parser.add_argument("--probes", type=int, default=300, help="low-load latency probes")
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--idle-samples", type=int, default=20, help="idle pickup probes")
    parser.add_argument(
        "--idle-gap", type=float, default=1.0, help="seconds idle (at least) before each"
    )
    parser.add_argument(
        "--concurrency", default="", help="override a worker's concurrency: NAME=N,NAME=N"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--db", type=int, default=12, help="Redis database for every library")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to drain the backlog")
    default_python = str(PEERS_PYTHON) if PEERS_PYTHON.exists() else sys.executable
    parser.add_argument("--python", default=default_python, help="interpreter with the peers")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(asyncio.run(measure(args))), flush=True)
        return
    if args.jobs < 1 or args.rounds < 1 or args.probes < 1 or args.idle_samples < 0:
        parser.error("--jobs, --rounds and --probes must be >= 1, --idle-samples >= 0")
    if args.sqlite and args.amqp:
        parser.error("--sqlite and --amqp are two different runs")
    known = SQLITE_LIBRARIES if args.sqlite else AMQP_LIBRARIES if args.amqp else LIBRARIES
    every = list(dict.fromkeys([*LIBRARIES, *AMQP_LIBRARIES]))
    only = [name for name in args.only.split(",") if name]
    skip = {name for name in args.skip.split(",") if name}
    unknown = [name for name in [*only, *skip] if name not in every]
    if unknown:
        parser.error(f"unknown libraries {unknown}; known: {', '.join(every)}")
    try:
        args.concurrency_of = dict(pair.split("=") for pair in args.concurrency.split(",") if pair)
    except ValueError:
        parser.error("--concurrency takes NAME=N,NAME=N")
    libraries = [name for name in known if (not only or name in only) and name not in skip]
    if not libraries:
        parser.error("no library left to run")

    width = max(9, *map(len, libraries))
    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds):
        shift = number % len(libraries)
        results: dict[str, Any] = {}
        for library in libraries[shift:] + libraries[:shift]:
            results[library] = result = run_child(library, args)
            label = f"round {number + 1}/{args.rounds} {library:<{width}}"
            print(f"{label} {summary(result)}", file=sys.stderr, flush=True)
        rounds.append(results)
    render(args, libraries, rounds)


def summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    p50, p99, idle = (result[k] for k in ("p50", "p99", "idle"))
    return (
        f"enqueue {result['enqueue']:>9,.0f}/s  process {result['process']:>8,.0f}/s  "
        f"p50 {p50 or 0:6.2f} ms  p99 {p99 or 0:6.2f} ms  idle {idle or 0:6.2f} ms"
    )


if __name__ == "__main__":
    main()
