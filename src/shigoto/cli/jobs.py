"""``shigoto jobs list|show|remove|promote``: inspect and administer jobs through the
Queue API."""

from __future__ import annotations

import click
import msgspec
from rich.console import Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..app import App
from ..errors import JobNotFound, ShigotoError
from ..job import JobRecord, JobState
from ..security.encryption import redact
from .render import (
    attempts_text,
    fmt_duration,
    fmt_json,
    fmt_retention,
    fmt_time,
    jobs_table,
    make_console,
    record_dict,
    state_text,
)
from .session import open_app, run, url_option

STATE_CHOICE = click.Choice([state.value for state in JobState], case_sensitive=False)


@click.group()
def jobs() -> None:
    """List, inspect, remove and promote jobs."""


@jobs.command("list")
@click.option("-q", "--queue", default=None, help="Only this queue (default: every queue).")
@click.option("-s", "--state", type=STATE_CHOICE, default=None, help="Only jobs in this state.")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="At most this many jobs (newest first).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@url_option
@click.pass_context
def list_jobs(
    ctx: click.Context, queue: str | None, state: str | None, limit: int, as_json: bool
) -> None:
    """List jobs, newest first; `--state dead` lists the dead-letter queue."""
    app = open_app(ctx)
    states = [JobState(state)] if state else list(JobState)

    async def main() -> list[JobRecord]:
        names = [queue] if queue else await (await app.backend()).queues()
        found: list[JobRecord] = []
        for name in names:
            for kind in states:
                found.extend(await app.queue(name).jobs(kind, limit=limit))
        if len(states) > 1 or len(names) > 1:
            found.sort(key=lambda r: (r.created_ms, r.id), reverse=True)
        return found[:limit]

    records = run(app, main)
    if as_json:
        for record in records:
            click.echo(msgspec.json.encode(record_dict(record)).decode())
        return
    console = make_console()
    where = f"queue {queue!r}" if queue else "all queues"
    what = f"{state} jobs" if state else "jobs"
    if not records:
        console.print(f"no {what} in {where}")
        return
    console.print(jobs_table(records, title=f"{what} in {where} ({len(records)} shown)"))


@jobs.command("show", short_help="One job with its data, result and errors.")
@click.argument("job_id")
@click.option("-q", "--queue", default=None, help="The job's queue (default: search all).")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@url_option
@click.pass_context
def show_job(ctx: click.Context, job_id: str, queue: str | None, as_json: bool) -> None:
    """Show one job: state, data, options, progress, result, errors with tracebacks.

    Searches every queue unless --queue is given."""
    app = open_app(ctx)
    record = run(app, lambda: find_job(app, job_id, queue))
    if as_json:
        click.echo(msgspec.json.encode(record_dict(record)).decode())
        return
    make_console().print(job_detail(record))


@jobs.command("remove", short_help="Delete a job that is not running.")
@click.argument("job_id")
@click.option("-q", "--queue", default=None, help="The job's queue (default: search all).")
@url_option
@click.pass_context
def remove_job(ctx: click.Context, job_id: str, queue: str | None) -> None:
    """Delete a job in any state but active (cancel a running job first): its data,
    result and history are gone. Recorded in the audit trail under --actor."""
    app = open_app(ctx)

    async def main() -> JobRecord:
        record = await find_job(app, job_id, queue)
        if record.state is JobState.ACTIVE or not await app.queue(record.queue).remove(job_id):
            raise ShigotoError(
                f"job {job_id!r} of queue {record.queue!r} is active (a worker is running "
                f"it): cancel it first (the worker stops at its next heartbeat), then remove it"
            )
        return record

    record = run(app, main)
    click.echo(f"removed job {job_id} ({record.state.value}) from queue {record.queue!r}")


@jobs.command("promote", short_help="Run a delayed job now.")
@click.argument("job_id")
@click.option("-q", "--queue", default=None, help="The job's queue (default: search all).")
@url_option
@click.pass_context
def promote_job(ctx: click.Context, job_id: str, queue: str | None) -> None:
    """Make a delayed job waiting now, as if its delay had just run out. Recorded in
    the audit trail under --actor."""
    app = open_app(ctx)

    async def main() -> JobRecord:
        record = await find_job(app, job_id, queue)
        if record.state is not JobState.DELAYED or not await app.queue(record.queue).promote(
            job_id
        ):
            raise ShigotoError(
                f"job {job_id!r} of queue {record.queue!r} is {record.state.value}, not "
                "delayed: only a delayed job can be promoted"
            )
        return record

    record = run(app, main)
    click.echo(f"promoted job {job_id} of queue {record.queue!r}: waiting now")


async def find_job(app: App, job_id: str, queue: str | None) -> JobRecord:
    """The job with this id in ``queue``, or in whichever queue holds it."""
    names = [queue] if queue else await (await app.backend()).queues()
    for name in names:
        job = await app.queue(name).get_job(job_id)
        if job is not None and job.record is not None:
            return job.record
    where = f"queue {queue!r}" if queue else f"any queue ({', '.join(names) or 'none exist'})"
    raise JobNotFound(
        f"no job with id {job_id!r} in {where}; it was never added, or was removed by "
        "remove_on_complete / remove_on_fail"
    )


def job_detail(record: JobRecord) -> Group:
    """Everything known about one job, errors last (they are the longest)."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    options = record.options
    backoff = options.backoff
    rows: list[tuple[str, str]] = [
        ("id", record.id),
        ("queue", record.queue),
        ("name", record.name),
        ("state", state_text(record.state)),
        ("reason", record.reason or "-"),
        ("priority", str(record.priority)),
        ("attempts", f"{attempts_text(record)} (stalls: {record.stalls})"),
        ("created", fmt_time(record.created_ms)),
        ("ready at", fmt_time(record.ready_ms)),
        ("started", fmt_time(record.started_ms)),
        ("finished", fmt_time(record.finished_ms)),
        ("duration", fmt_duration(record.duration_ms)),
        ("worker", record.worker_id or "-"),
    ]
    if record.state is JobState.ACTIVE:
        rows.append(("lease until", fmt_time(record.lease_until_ms)))
    if record.cancel_requested:
        rows.append(("cancel", "requested"))
    rows += [
        ("progress", fmt_json(record.progress_value)),
        ("result", fmt_json(record.result_value)),
        (
            "options",
            f"attempts={options.attempts} backoff={backoff.kind}({backoff.delay_s:g} s"
            + (f", max {backoff.max_delay_s:g} s" if backoff.max_delay_s is not None else "")
            + (f", jitter {backoff.jitter:g}" if backoff.jitter else "")
            + ")"
            + (f" timeout={options.timeout_s:g} s" if options.timeout_s is not None else "")
            + f" max_stalls={options.max_stalls}"
            + f" remove_on_complete: {fmt_retention(options.remove_on_complete)}"
            + f", remove_on_fail: {fmt_retention(options.remove_on_fail)}",
        ),
    ]
    for label, value in rows:
        fields.add_row(label, value)
    try:
        shown = redact(record.data)  # encrypted fields: «encrypted»
        data = msgspec.json.format(msgspec.json.encode(shown), indent=2).decode()
    except msgspec.DecodeError:
        data = repr(record.payload)
    parts: list[Panel | Table | Text] = [
        Panel(fields, title=f"job {record.id}", title_align="left"),
        Panel(Syntax(data, "json", word_wrap=True), title="data", title_align="left"),
    ]
    if not record.errors:
        parts.append(Text("no errors recorded"))
    for error in record.errors:
        heading = (
            f"attempt {error.attempt}" if error.attempt else "note (attempt not counted)"
        ) + f" · {error.error_type} · {fmt_time(error.ended_ms)} · worker {error.worker_id}"
        body: list[Text] = [Text(error.message, style="bold red")]
        if error.traceback:
            body.append(Text(error.traceback.rstrip()))
        parts.append(Panel(Group(*body), title=heading, title_align="left", border_style="red"))
    return Group(*parts)
