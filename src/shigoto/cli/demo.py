"""``shigoto demo``: the brief's scenarios, played on a throwaway SQLite file.

An in-process worker runs every job; the demo narrates what happens through the
public API only (``enqueue``, ``wait_until_finished``, ``counts``, events), so it is
also a worked example of that API. It checks its own outcomes and exits non-zero when
a scenario does not end as it should, which makes ``make demo`` a smoke test too.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table

from ..app import App
from ..context import JobContext, SyncJobContext
from ..errors import JobFailed
from ..events import Event
from ..job import Job, JobState
from ..retry import Backoff, UnrecoverableError
from .render import (
    attempts_text,
    counts_table,
    fmt_duration,
    make_console,
    short_error,
    state_text,
)
from .session import configure_logging, log_level
from .stats import queue_counts

QUEUES = ["email", "payments", "imports"]
LEASE_S = 2.0
"""Short on purpose: the batch import runs twice as long, so heartbeats must renew it."""
REMINDER_DELAY_S = 1.5
IMPORT_ROWS = 800
IMPORT_CHUNKS = 8
IMPORT_CHUNK_S = 0.5
WAIT_S = 30.0
"""Longest wait for any one scenario; the whole demo takes well under 15 s."""


@dataclass
class Played:
    """A job the demo follows, and the state it must end in."""

    scenario: str
    job: Job
    expected: JobState


class Demo:
    def __init__(self, console: Console, url: str) -> None:
        self.console = console
        self.app = App(url)
        self.started = time.monotonic()
        self.runs: Counter[str] = Counter()
        self.order: list[str] = []
        self.played: list[Played] = []
        self.problems: list[str] = []
        self.lease_renewals = 0
        self._bar: Progress | None = None
        self._bar_task: TaskID | None = None
        self._define_jobs()
        self.app.on("retrying", self._on_retrying)
        self.app.on("dead", self._on_dead)
        self.app.on("progress", self._on_progress)

    # -- the jobs (the brief's examples) -------------------------------------------------

    def _define_jobs(self) -> None:
        app = self.app

        @app.job(queue="email", attempts=3, backoff=Backoff.exponential(0.5, max_delay=5))
        async def send_welcome(ctx: JobContext, user_id: int, email: str) -> dict[str, Any]:
            self.runs[ctx.job_id] += 1
            await asyncio.sleep(0.05)  # talking to the mail server
            return {"sent_to": email}

        @app.job(queue="email")
        async def send_reminder(ctx: JobContext, user_id: int) -> None:
            self.runs[ctx.job_id] += 1

        @app.job(queue="email")
        async def send_notification(ctx: JobContext, kind: str) -> None:
            self.order.append(kind)
            await asyncio.sleep(0.05)

        @app.job(queue="email", attempts=3, backoff=Backoff.exponential(0.5, max_delay=5))
        async def send_invoice(ctx: JobContext, order_id: int) -> str:
            self.say(f"send_invoice: attempt {ctx.attempt} connects to the mail server")
            if ctx.attempt < 3:
                raise ConnectionError("mail server refused the connection")
            return f"invoice {order_id} sent"

        @app.job(queue="payments", attempts=3)
        async def charge_card(ctx: JobContext, order_id: int, amount: int) -> None:
            raise UnrecoverableError(
                f"card declined for order {order_id} ({amount} JPY): insufficient funds"
            )

        @app.job(queue="imports", attempts=2, timeout=60)
        def import_users(ctx: SyncJobContext, batch_id: str, rows: int) -> dict[str, Any]:
            # A plain `def` handler: it runs in a thread, and may block as it likes;
            # heartbeats renew its lease from another thread meanwhile.
            for chunk in range(1, IMPORT_CHUNKS + 1):
                time.sleep(IMPORT_CHUNK_S)  # parse and insert one chunk of rows
                ctx.update_progress(round(100 * chunk / IMPORT_CHUNKS))
            return {"batch": batch_id, "imported": rows}

    # -- narration -----------------------------------------------------------------------

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:6.2f}s[/]  {message}")

    def heading(self, title: str) -> None:
        self.console.print()
        self.console.rule(f"[bold]{title}", align="left")

    def _on_retrying(self, event: Event) -> None:
        error = event.detail["error"]
        self.say(
            f"[yellow]attempt {event.attempt} failed[/] ({error.error_type}: {error.message})"
            f" -> retry in {event.detail['delay_s']:.2f} s"
        )

    def _on_dead(self, event: Event) -> None:
        error = event.detail.get("error")
        cause = f": {error.error_type.rsplit('.', 1)[-1]}: {error.message}" if error else ""
        self.say(
            f"[bold red]{event.name} is dead[/] (reason {event.detail.get('reason')}) "
            f"after attempt {event.attempt}{cause}"
        )

    def _on_progress(self, event: Event) -> None:
        value = event.detail.get("progress")
        if not isinstance(value, int | float):
            return
        if self._bar is not None and self._bar_task is not None:
            self._bar.update(self._bar_task, completed=value)
        else:
            self.say(f"{event.name}: progress {value}%")

    def follow(self, scenario: str, job: Job, expected: JobState) -> Job:
        self.played.append(Played(scenario, job, expected))
        return job

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)
            self.say(f"[bold red]unexpected:[/] {problem}")

    # -- the scenarios -----------------------------------------------------------------

    async def play(self) -> bool:
        worker = self.app.worker(
            QUEUES,
            concurrency=4,
            lease_s=LEASE_S,
            stall_check_s=1.0,
            idle_wait_s=0.2,
            shutdown_grace_s=5.0,
            handle_signals=False,
            name="demo-worker",
        )
        self.say(
            f"worker {worker.id}: queues {', '.join(QUEUES)}, concurrency 4, lease {LEASE_S:g} s"
        )
        running = asyncio.create_task(worker.run(), name="demo-worker")
        try:
            await self.immediate()
            await self.delayed()
            await self.priority()
            await self.long_running()
            await self.retries()
            await self.business_error()
            await self.duplicate()
        finally:
            worker.stop()
            await running
        await self.summary()
        return not self.problems

    async def immediate(self) -> None:
        self.heading("1. Immediate job: a welcome email")
        handler = self.app.handlers["send_welcome"]
        job = await handler.enqueue(user_id=42, email="aiko@example.com", job_id="welcome:42")
        self.follow("immediate", job, JobState.COMPLETED)
        self.say(f"enqueued send_welcome(user_id=42) as job {job.id!r}")
        result = await job.wait_until_finished(timeout=WAIT_S)
        record = await job.refresh()
        waited = (record.started_ms or 0) - record.created_ms
        self.say(
            f"{state_text(record.state)}: picked up after {fmt_duration(waited)}, ran "
            f"{fmt_duration(record.duration_ms)}, result {result}"
        )

    async def delayed(self) -> None:
        self.heading(f"2. Delayed job: a reminder {REMINDER_DELAY_S:g} s later")
        handler = self.app.handlers["send_reminder"]
        job = await handler.enqueue(user_id=42, delay=REMINDER_DELAY_S, job_id="reminder:42")
        self.follow("delayed", job, JobState.COMPLETED)
        state = await job.state()
        self.say(f"enqueued send_reminder with delay={REMINDER_DELAY_S:g} -> {state_text(state)}")
        self.check(state is JobState.DELAYED, f"a delayed job should start delayed, not {state}")
        await job.wait_until_finished(timeout=WAIT_S)
        record = await job.refresh()
        waited_s = ((record.started_ms or 0) - record.created_ms) / 1000
        self.say(f"{state_text(record.state)}: it started {waited_s:.2f} s after it was enqueued")
        self.check(waited_s >= REMINDER_DELAY_S - 0.01, "the delayed job ran before its delay")

    async def priority(self) -> None:
        self.heading("3. Priorities: the higher one runs first")
        queue = self.app.queue("email")
        handler = self.app.handlers["send_notification"]
        await queue.pause()
        low = await handler.enqueue(kind="newsletter", priority=0, job_id="notify:newsletter")
        high = await handler.enqueue(
            kind="password-reset", priority=10, job_id="notify:password-reset"
        )
        self.follow("priority 0", low, JobState.COMPLETED)
        self.follow("priority 10", high, JobState.COMPLETED)
        counts = await queue.counts()
        self.say(
            f"queue email paused; added newsletter (priority 0) first, then password-reset "
            f"(priority 10): {counts['waiting']} waiting"
        )
        await queue.resume()
        self.say("queue email resumed")
        for job in (low, high):
            await job.wait_until_finished(timeout=WAIT_S)
        self.say(f"ran in this order: [bold]{' -> '.join(self.order)}[/]")
        self.check(
            self.order == ["password-reset", "newsletter"], f"wrong priority order {self.order}"
        )

    async def long_running(self) -> None:
        self.heading("4. Long job: a batch import with progress and heartbeats")
        handler = self.app.handlers["import_users"]
        job = await handler.enqueue(
            batch_id="users-2024-05", rows=IMPORT_ROWS, job_id="import:users-2024-05"
        )
        self.follow("long-running", job, JobState.COMPLETED)
        self.say(
            f"import_users: {IMPORT_CHUNKS} chunks of {IMPORT_CHUNK_S:g} s "
            f"(~{IMPORT_CHUNKS * IMPORT_CHUNK_S:g} s) on a {LEASE_S:g} s lease"
        )
        watcher = asyncio.create_task(self._watch_lease(job))
        try:
            if self.console.is_terminal:
                columns = (
                    TextColumn("[bold]import_users"),
                    BarColumn(),
                    TaskProgressColumn(),
                )
                with Progress(*columns, console=self.console) as bar:
                    self._bar, self._bar_task = bar, bar.add_task("import", total=100)
                    await job.wait_until_finished(timeout=WAIT_S)
                    bar.update(self._bar_task, completed=100)
            else:
                await job.wait_until_finished(timeout=WAIT_S)
        finally:
            self._bar = self._bar_task = None
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        record = await job.refresh()
        self.say(
            f"{state_text(record.state)} in {fmt_duration(record.duration_ms)}, result "
            f"{record.result_value}; lease renewed {self.lease_renewals} time(s), "
            f"stalls: {record.stalls}"
        )
        self.check(self.lease_renewals > 0, "no heartbeat renewed the import's lease")
        self.check(record.stalls == 0, "the import stalled although heartbeats ran")

    async def _watch_lease(self, job: Job) -> None:
        """Print each lease renewal the worker's heartbeat thread makes."""
        last: int | None = None
        while True:
            record = await job.refresh()
            if record.state.is_final:
                return
            until = record.lease_until_ms
            if record.state is JobState.ACTIVE and until is not None:
                if last is not None and until > last:
                    self.lease_renewals += 1
                    now_ms = self.app.clock.now_ms()
                    running_s = (now_ms - (record.started_ms or now_ms)) / 1000
                    self.say(
                        f"heartbeat: lease renewed, expires in {(until - now_ms) / 1000:.1f} s;"
                        f" the job has run {running_s:.1f} s"
                        + (f" (longer than the {LEASE_S:g} s lease)" if running_s > LEASE_S else "")
                    )
                last = until
            await asyncio.sleep(0.1)

    async def retries(self) -> None:
        self.heading("5. Retries: fails twice, then succeeds (exponential backoff from 0.5 s)")
        handler = self.app.handlers["send_invoice"]
        job = await handler.enqueue(order_id=1001, job_id="invoice:1001")
        self.follow("retry + backoff", job, JobState.COMPLETED)
        result = await job.wait_until_finished(timeout=WAIT_S)
        record = await job.refresh()
        self.say(
            f"{state_text(record.state)} on attempt {attempts_text(record)}: {result!r}; "
            f"{len(record.errors)} earlier error(s) kept on the job"
        )
        self.check(record.attempts == 3, f"expected 3 attempts, got {record.attempts}")

    async def business_error(self) -> None:
        self.heading("6. Business error: UnrecoverableError goes straight to dead")
        handler = self.app.handlers["charge_card"]
        job = await handler.enqueue(order_id=1002, amount=4980, job_id="charge:1002")
        self.follow("business error", job, JobState.DEAD)
        with contextlib.suppress(JobFailed):  # expected: the job is dead
            await job.wait_until_finished(timeout=WAIT_S)
        record = await job.refresh()
        self.say(
            f"{state_text(record.state)} after {attempts_text(record)} attempt(s): no retry, "
            "the job waits in the dead-letter state for an operator"
        )
        self.check(record.attempts == 1, "a business error must not be retried")

    async def duplicate(self) -> None:
        self.heading("7. Duplicate job_id: enqueued once")
        handler = self.app.handlers["send_welcome"]
        again = await handler.enqueue(user_id=42, email="aiko@example.com", job_id="welcome:42")
        state = await again.state()
        self.say(
            f"enqueue(job_id='welcome:42') again -> created={again.created}, "
            f"returns the existing job ({state_text(state)})"
        )
        await asyncio.sleep(0.3)  # give a (wrongly) duplicated job the time to run
        runs = self.runs["welcome:42"]
        self.say(f"send_welcome for job welcome:42 ran {runs} time(s)")
        self.check(not again.created and runs == 1, "the duplicate job_id was enqueued twice")

    # -- the final tables ----------------------------------------------------------------

    async def summary(self) -> None:
        self.heading("Summary")
        table = Table(title="jobs", title_justify="left")
        for column in ("name", "id", "state", "attempts", "duration"):
            table.add_column(column, no_wrap=True)
        table.add_column("error / reason", overflow="fold", ratio=1)
        for played in self.played:
            record = await played.job.refresh()
            self.check(
                record.state is played.expected,
                f"{played.scenario}: {record.name} ended {record.state}, expected "
                f"{played.expected}",
            )
            table.add_row(
                record.name,
                record.id,
                state_text(record.state),
                attempts_text(record),
                fmt_duration(record.duration_ms),
                short_error(record, width=100),
            )
        self.console.print(table)
        counts, paused = await queue_counts(self.app, QUEUES)
        self.console.print(counts_table(counts, paused, title="queues"))
        await self.app.close()


@click.command(short_help="Play the brief's scenarios on a throwaway database.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's SQLite file in this directory (default: a temporary one, "
    "deleted afterwards).",
)
@click.pass_context
def demo(ctx: click.Context, directory: Path | None) -> None:
    """Play the brief's scenarios on a throwaway SQLite file, with a worker in-process.

    Immediate, delayed and prioritised jobs; a long import with progress and lease
    heartbeats; retries with exponential backoff; a business error that goes straight
    to dead; a duplicate job_id. Ends with a table of every job and of each queue.
    """
    configure_logging(log_level(ctx, "error"))
    console = make_console()
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory.absolute() / f"demo-{datetime.now():%Y%m%d-%H%M%S-%f}.db"
        ok, seconds = _play(console, path)
        url = f"sqlite:///{path}"
        console.print(
            f"\nThe database is kept at {path}. Look inside with:\n"
            f"  shigoto --url {url} stats\n"
            f"  shigoto --url {url} jobs list --state dead\n"
            f"  shigoto --url {url} jobs show charge:1002"
        )
    else:
        with tempfile.TemporaryDirectory(prefix="shigoto-demo-") as tmp:
            ok, seconds = _play(console, Path(tmp) / "demo.db")
    if not ok:
        raise click.ClickException(f"the demo did not go as expected ({seconds:.1f} s)")
    console.print(f"\n[bold green]demo finished in {seconds:.1f} s[/]")


def _play(console: Console, path: Path) -> tuple[bool, float]:
    started = time.monotonic()
    console.print(f"[bold]shigoto demo[/] on sqlite:///{path}")
    demo_run = Demo(console, f"sqlite:///{path}?poll=0.05")
    ok = asyncio.run(demo_run.play())
    return ok, time.monotonic() - started
