"""The metrics tables of ``shigoto stats`` and its live ``--watch`` view (a small ``top``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Iterator

import msgspec
from rich.console import Group
from rich.live import Live
from rich.table import Table

from ..alerts import AlertStatus
from ..app import App
from ..metrics import QueueSnapshot, WorkerHealth, worker_health
from .render import fmt_time, make_console

STATE_STYLE = {"pending": "yellow", "firing": "bold red"}


def _s(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


async def gather(
    app: App, names: list[str] | None
) -> tuple[list[QueueSnapshot], dict[str, list[str]], list[WorkerHealth]]:
    """Snapshots of the queues, active alerts per queue, and live workers."""
    backend = await app.backend()
    queues = names or await backend.queues()
    snapshots = [await app.metrics(q).snapshot() for q in queues]
    active: dict[str, list[str]] = {}
    for stored in await backend.alert_states():
        status = msgspec.json.decode(stored.state, type=AlertStatus)
        if status.state in ("pending", "firing"):
            style = STATE_STYLE[status.state]
            active.setdefault(status.queue, []).append(f"[{style}]{status.rule}[/]")
    return snapshots, active, await worker_health(app)


def metrics_table(snapshots: list[QueueSnapshot], alerts: dict[str, list[str]]) -> Table:
    window = int(snapshots[0].window_s / 60) if snapshots else 5
    table = Table(title=f"queues (rates over {window} min)", header_style="bold")
    for column in ("queue", "waiting", "delayed", "active", "dead", "done/min", "fail %",
                   "p50", "p95", "wait avg", "delay", "alerts"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("queue", "alerts") else "right")
    for s in snapshots:
        name = f"{s.queue} [dim](paused)[/]" if s.paused else s.queue
        table.add_row(
            name, str(s.waiting), str(s.delayed), str(s.active), str(s.dead),
            f"{s.throughput_per_min:.1f}", _rate(s.failure_rate), _s(s.processing.p50_s),
            _s(s.processing.p95_s), _s(s.wait.avg_s), _s(s.delay_s),
            " ".join(alerts.get(s.queue, [])) or "[green]ok[/]",
        )  # fmt: skip
    return table


def names_table(snapshots: list[QueueSnapshot]) -> Table | None:
    """Per job name: how many wait, are delayed, run and are dead now, and the window's
    outcomes, so an operator sees which job fills a queue without listing it."""
    rows = [(s.queue, job) for s in snapshots for job in s.jobs.values()]
    if not rows:
        return None
    partial = any(not s.names_complete for s in snapshots)
    title = "jobs by name" + (" (split of the first 10,000 per state)" if partial else "")
    table = Table(title=title, header_style="bold")
    for column in ("queue", "job", "waiting", "delayed", "active", "dead", "done", "failed",
                   "fail %", "p95"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("queue", "job") else "right")
    for queue, job in rows:
        table.add_row(
            queue, job.name, str(job.waiting), str(job.delayed), str(job.active),
            str(job.dead_count), str(job.completed), str(job.failed), _rate(job.failure_rate),
            _s(job.processing.p95_s),
        )  # fmt: skip
    return table


def slow_table(snapshots: list[QueueSnapshot]) -> Table | None:
    """The granularity guard: handlers whose jobs ran past their target."""
    rows = [(s.queue, job) for s in snapshots for job in s.jobs.values() if job.slow]
    if not rows:
        return None
    table = Table(title="jobs over their target duration (split them)", header_style="bold")
    for column in ("queue", "job", "over target", "runs", "p95", "max bucket"):
        table.add_column(column)
    for queue, job in rows:
        table.add_row(
            queue, job.name, str(job.slow), str(job.processing.count), _s(job.processing.p95_s),
            _s(job.processing.p99_s),
        )  # fmt: skip
    return table


def workers_table(workers: list[WorkerHealth]) -> Table | None:
    if not workers:
        return None
    table = Table(title="workers", header_style="bold")
    for column in ("worker", "queues", "running", "processed", "failed", "last claim", "status"):
        table.add_column(column)
    for w in workers:
        style = {"stuck": "bold red", "idle": "dim"}.get(w.status, "green")
        table.add_row(
            w.info.id, ",".join(w.info.queues), f"{w.info.running}/{w.info.concurrency}",
            str(w.info.processed), str(w.info.failed), fmt_time(w.info.last_claim_ms),
            f"[{style}]{w.status}[/]",
        )  # fmt: skip
    return table


def view(
    app: App, data: tuple[list[QueueSnapshot], dict[str, list[str]], list[WorkerHealth]]
) -> Group:
    snapshots, alerts, workers = data
    parts: list[Table] = [metrics_table(snapshots, alerts)]
    for extra in (names_table(snapshots), slow_table(snapshots), workers_table(workers)):
        if extra is not None:
            parts.append(extra)
    return Group(*parts)


@contextlib.contextmanager
def _keys(quit_event: threading.Event) -> Iterator[None]:
    """Watch stdin for ``q`` (cbreak mode on a terminal) in a daemon thread."""
    if not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read() -> None:
        while not quit_event.is_set():
            char = os.read(fd, 1)
            if not char or char in (b"q", b"Q"):
                quit_event.set()

    threading.Thread(target=read, daemon=True, name="shigoto-watch-keys").start()
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def watch(app: App, names: list[str] | None, *, interval_s: float = 1.0,
                iterations: int | None = None) -> None:  # fmt: skip
    """Redraw every ``interval_s`` until ``q`` (or Ctrl-C, or ``iterations`` frames)."""
    console = make_console()
    quit_event = threading.Event()
    frames = 0
    with _keys(quit_event), Live(console=console, auto_refresh=False, screen=False) as live:
        while not quit_event.is_set():
            data = await gather(app, names)
            live.update(view(app, data), refresh=True)
            frames += 1
            if iterations is not None and frames >= iterations:
                break
            for _ in range(int(interval_s * 10)):
                if quit_event.is_set():
                    break
                await asyncio.sleep(0.1)
