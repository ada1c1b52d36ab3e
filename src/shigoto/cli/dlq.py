"""``shigoto dlq``: operate the dead-letter queue — list, stats, show, redrive, purge.

Every subcommand works through :class:`~shigoto.queue.Queue` (``dead_letters``,
``dead_letter_groups``, ``redrive``, ``purge``), so what the CLI shows is exactly what
the Python API returns. Without ``--queue`` a command covers every queue.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..app import App
from ..backends.contract import DeadLetter
from ..dead_letter_query import build_query, fingerprint_of, parse_rate
from ..dead_letters import DeadLetterGroup, DeadLetterReport
from ..errors import JobNotFound
from ..job import DeadReason, JobRecord
from .render import fmt_duration, fmt_short_time, fmt_time, jobs_table, make_console
from .session import cli_actor, open_app, run, url_option

F = TypeVar("F", bound=Callable[..., Any])

REASONS = [r.value for r in DeadReason] + ["cancelled"]
SHOWN = 50
"""Rows a dry run prints (the count covers them all)."""
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)")
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w``, or combinations such as ``1h30m``."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not parts or _DURATION.sub("", cleaned).strip():
        raise click.BadParameter(f"{text!r} is not a duration such as 90s, 15m, 2h or 7d")
    return timedelta(seconds=sum(float(n) * _UNIT_S[unit] for n, unit in parts))


def parse_when(text: str | None) -> datetime | timedelta | None:
    """A duration meaning "that long ago" (``2h``), or an ISO date/time (local if naive)."""
    if text is None:
        return None
    try:
        return parse_duration(text)
    except click.BadParameter:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration ago (2h, 7d) nor a date/time (2024-05-01T09:00)"
        ) from None


def filter_options(fn: F) -> F:
    """The dead-letter filters shared by list, stats, redrive and purge."""
    options = [
        click.option("-q", "--queue", default=None, help="Only this queue (default: all)."),
        click.option("--name", "names", multiple=True, help="Job name (repeatable: any of)."),
        click.option(
            "--reason",
            "reasons",
            multiple=True,
            type=click.Choice(REASONS, case_sensitive=False),
            help="Dead reason (repeatable).",
        ),
        click.option(
            "--error-type",
            "error_types",
            multiple=True,
            help="Type of the last error, e.g. TimeoutError or myapp.errors.Busy (repeatable).",
        ),
        click.option("--since", default=None, help="Died after: 2h (ago) or 2024-05-01T09:00."),
        click.option("--until", default=None, help="Died before: 30m (ago) or a date/time."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def fingerprint_option(fn: F) -> F:
    return click.option(
        "--fingerprint",
        "fingerprints",
        multiple=True,
        help="Error group from `dlq stats` (a prefix of 4+ characters is enough).",
    )(fn)


def filters_of(params: dict[str, Any], *, with_fingerprint: bool = True) -> dict[str, Any]:
    """Keyword filters for the Queue API from the parsed options."""
    out: dict[str, Any] = {
        "name": params["names"] or None,
        "reason": params["reasons"] or None,
        "error_type": params["error_types"] or None,
        "since": parse_when(params["since"]),
        "until": parse_when(params["until"]),
    }
    if with_fingerprint:
        out["fingerprint"] = params["fingerprints"] or None
    # validate now, before any I/O: a typo fails with a clear message
    build_query(0, **out)
    return out


async def queue_names(app: App, queue: str | None) -> list[str]:
    return [queue] if queue else await (await app.backend()).queues()


@click.group()
def dlq() -> None:
    """The dead-letter queue: list, analyse (stats), show, redrive and purge dead jobs."""


# -- list -------------------------------------------------------------------------------


@dlq.command("list")
@filter_options
@fingerprint_option
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="Jobs per page (newest death first).",
)
@click.option("--cursor", default=None, help="Continue a listing (printed under the table).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@url_option
@click.pass_context
def list_dead(
    ctx: click.Context, /, limit: int, cursor: str | None, as_json: bool, **params: Any
) -> None:
    """List dead jobs, newest death first, with their last error and fingerprint."""
    filters = filters_of(params)
    queue = params["queue"]
    if cursor is not None and queue is None:
        raise click.UsageError("--cursor continues the listing of one queue: pass --queue too")
    app = open_app(ctx)

    async def main() -> tuple[list[DeadLetter], str | None]:
        found: list[DeadLetter] = []
        next_cursor = None
        for name in await queue_names(app, queue):
            page = await app.queue(name).dead_letters(**filters, cursor=cursor, limit=limit)
            found += page.items
            next_cursor = page.cursor
        found.sort(key=lambda d: d.finished_ms, reverse=True)
        return found[:limit], next_cursor if queue else None

    letters, next_cursor = run(app, main)
    if as_json:
        for letter in letters:
            out = msgspec.to_builtins(letter)
            out["fingerprint"] = fingerprint_of(letter).key
            click.echo(msgspec.json.encode(out).decode())
        return
    console = make_console()
    where = f"queue {queue!r}" if queue else "all queues"
    if not letters:
        console.print(f"no dead jobs in {where} match")
        return
    console.print(dead_table(letters, title=f"dead jobs in {where} ({len(letters)} shown)"))
    if next_cursor:
        console.print(f"more: shigoto dlq list --queue {queue} --cursor {next_cursor}")


def dead_table(letters: list[DeadLetter], *, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("queue", "id", "name", "reason", "attempts", "died", "fingerprint"):
        table.add_column(column, overflow="fold", no_wrap=column in ("attempts", "died"))
    table.add_column("last error", overflow="fold", ratio=1, min_width=30)
    for letter in letters:
        error = letter.last_error
        text = f"{error.error_type.rsplit('.', 1)[-1]}: {error.message}" if error else "-"
        text = text.splitlines()[0] if text else text
        table.add_row(
            letter.queue,
            letter.id,
            letter.name,
            letter.reason or "-",
            str(letter.attempts),
            fmt_short_time(letter.finished_ms),
            fingerprint_of(letter).key,
            text[:120],
        )
    return table


# -- stats ------------------------------------------------------------------------------


@dlq.command("stats")
@filter_options
@click.option(
    "--scan-limit",
    type=click.IntRange(1, 1_000_000),
    default=10_000,
    show_default=True,
    help="Read at most this many dead jobs per queue (newest first).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
@url_option
@click.pass_context
def stats(ctx: click.Context, /, scan_limit: int, as_json: bool, **params: Any) -> None:
    """Error analysis: dead jobs grouped by cause (error type + normalised message +
    the handler's top frame), largest group first."""
    filters = filters_of(params, with_fingerprint=False)
    app = open_app(ctx)

    async def main() -> list[DeadLetterReport]:
        return [
            await app.queue(name).dead_letter_groups(**filters, scan_limit=scan_limit)
            for name in await queue_names(app, params["queue"])
        ]

    reports = run(app, main)
    if as_json:
        click.echo(msgspec.json.encode([msgspec.to_builtins(r) for r in reports]).decode())
        return
    console = make_console()
    shown = [r for r in reports if r.groups]
    if not shown:
        console.print("no dead jobs match")
        return
    for report in shown:
        console.print(groups_table(report))
        if not report.complete:
            console.print(
                f"[yellow]only the newest {report.scanned} of {report.total_dead} dead jobs were "
                "read; raise --scan-limit or narrow with filters for full counts[/]"
            )
    console.print(
        "redrive a group: shigoto dlq redrive --queue Q --fingerprint FP [--dry-run]; "
        "details: shigoto dlq show FP"
    )


def groups_table(report: DeadLetterReport) -> Table:
    title = (
        f"dead letters of queue {report.queue!r}: {report.total_dead} dead, "
        f"{len(report.groups)} cause(s)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("fingerprint", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("error", overflow="fold", ratio=3, min_width=30)
    table.add_column("where", overflow="fold", ratio=1)
    table.add_column("jobs", overflow="fold", ratio=1)
    table.add_column("last seen", no_wrap=True)
    table.add_column("sample id", overflow="fold")
    for group in report.groups:
        table.add_row(
            group.fingerprint,
            str(group.count),
            f"[bold]{group.error_type.rsplit('.', 1)[-1]}[/]: {group.message}",
            group.frame,
            ", ".join(group.job_names),
            fmt_short_time(group.last_seen_ms),
            group.sample_ids[0] if group.sample_ids else "-",
        )
    return table


# -- show -------------------------------------------------------------------------------


@dlq.command("show")
@click.argument("ident")
@click.option("-q", "--queue", default=None, help="The queue (default: search all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@url_option
@click.pass_context
def show(ctx: click.Context, ident: str, queue: str | None, as_json: bool) -> None:
    """Show a dead job (by id: data, every attempt's error, redrive history) or an error
    group (by fingerprint from `dlq stats`: its sample traceback and jobs)."""
    from .jobs import find_job, job_detail
    from .render import record_dict

    app = open_app(ctx)

    async def main() -> Any:
        try:
            return await find_job(app, ident, queue)
        except JobNotFound:
            if not re.fullmatch(r"[0-9a-fA-F]{4,12}", ident):
                raise
        for name in await queue_names(app, queue):
            report = await app.queue(name).dead_letter_groups(scan_limit=100_000, samples=10)
            for group in report.groups:
                if group.fingerprint.startswith(ident.lower()):
                    return report.queue, group
        raise JobNotFound(f"no dead job and no error group {ident!r} found")

    found = run(app, main)
    if isinstance(found, tuple):
        queue_name, group = found
        if as_json:
            click.echo(msgspec.json.encode(msgspec.to_builtins(group)).decode())
            return
        make_console().print(group_detail(queue_name, group))
        return
    if as_json:
        click.echo(msgspec.json.encode(record_dict(found)).decode())
        return
    make_console().print(job_detail(found))


def group_detail(queue: str, group: DeadLetterGroup) -> Group:
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    for label, value in (
        ("queue", queue),
        ("fingerprint", group.fingerprint),
        ("error type", group.error_type),
        ("message", group.message),
        ("example", group.sample_message),
        ("where", group.frame),
        ("count", str(group.count)),
        ("job names", ", ".join(group.job_names)),
        ("reasons", ", ".join(f"{r} ({n})" for r, n in group.reasons.items())),
        ("first seen", fmt_time(group.first_seen_ms)),
        ("last seen", fmt_time(group.last_seen_ms)),
        ("sample ids", ", ".join(group.sample_ids)),
    ):
        fields.add_row(label, value)
    traceback = Text(group.sample_traceback.rstrip() or "(no traceback recorded)")
    return Group(
        Panel(fields, title=f"error group {group.fingerprint}", title_align="left"),
        Panel(traceback, title="newest traceback", title_align="left", border_style="red"),
        Text(f"redrive it: shigoto dlq redrive --queue {queue} --fingerprint {group.fingerprint}"),
    )


# -- redrive / purge --------------------------------------------------------------------


@dlq.command("redrive")
@click.argument("job_ids", nargs=-1)
@filter_options
@fingerprint_option
@click.option("--all", "everything", is_flag=True, help="Every dead job (of --queue or all).")
@click.option("--dry-run", is_flag=True, help="Only list what would be redriven.")
@click.option("--rate", default=None, help="Spread the jobs out, e.g. 100/s, 600/m, 1000/h.")
@url_option
@click.pass_context
def redrive(
    ctx: click.Context,
    /,
    job_ids: tuple[str, ...],
    everything: bool,
    dry_run: bool,
    rate: str | None,
    **params: Any,
) -> None:
    """Move dead jobs back to their queue: by JOB_IDS, by filters, or --all.

    Attempts restart from zero; earlier errors stay in the job's history, with a
    "Redriven by USER@HOST" entry. With --rate the jobs get staggered due times, so a
    large redrive does not stampede downstream; the command returns at once.
    """
    filters = filters_of(params)
    per_second = parse_rate(rate) if rate else None
    selection = _selection(job_ids, filters, everything)
    app = open_app(ctx)
    actor = cli_actor()  # --actor / SHIGOTO_ACTOR, else user@host

    async def main() -> dict[str, list[str]]:
        moved: dict[str, list[str]] = {}
        for name in await queue_names(app, params["queue"]):
            ids = await app.queue(name).redrive(
                **selection, dry_run=dry_run, rate=rate, actor=actor
            )
            if ids:
                moved[name] = ids
        return moved

    moved = run(app, main)
    total = sum(len(ids) for ids in moved.values())
    console = make_console()
    if dry_run:
        _print_selected(console, app, moved, "would be redriven")
        if per_second and total:
            console.print(
                f"at {rate} they would be spread over {fmt_duration(total / per_second * 1000)}"
            )
        return
    for name, ids in moved.items():
        console.print(f"redrove {len(ids)} job(s) of queue {name!r} (recorded as {actor})")
    if not moved:
        console.print("no dead jobs matched; nothing redriven")
    elif per_second:
        console.print(
            f"due times staggered at {rate}: the last starts in about "
            f"{fmt_duration(total / per_second * 1000)} (they wait as 'delayed')"
        )


@dlq.command("purge")
@click.argument("job_ids", nargs=-1)
@filter_options
@fingerprint_option
@click.option("--older-than", default=None, help="Died longer ago than this: 30d, 12h...")
@click.option("--all", "everything", is_flag=True, help="Every dead job (of --queue or all).")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("-y", "--yes", is_flag=True, help="Delete without asking (needed when not a tty).")
@url_option
@click.pass_context
def purge(
    ctx: click.Context,
    /,
    job_ids: tuple[str, ...],
    older_than: str | None,
    everything: bool,
    dry_run: bool,
    yes: bool,
    **params: Any,
) -> None:
    """Delete dead jobs for good: by JOB_IDS, --older-than, filters, or --all."""
    filters = filters_of(params)
    age = parse_duration(older_than) if older_than else None
    if age is not None:
        filters["older_than"] = age
    selection = _selection(job_ids, filters, everything)
    app = open_app(ctx)

    async def count() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for name in await queue_names(app, params["queue"]):
            ids = await app.queue(name).purge(**selection, dry_run=True)
            if ids:
                found[name] = ids
        return found

    console = make_console()
    if dry_run:
        _print_selected(console, app, run(app, count), "would be deleted")
        return
    if not yes:
        found = run(app, count)
        total = sum(len(ids) for ids in found.values())
        if not total:
            console.print("no dead jobs matched; nothing deleted")
            return
        if not sys.stdin.isatty():
            raise click.UsageError(
                f"purge would delete {total} dead job(s) for good: pass --yes to confirm "
                "(or --dry-run to list them)"
            )
        click.confirm(f"delete {total} dead job(s) for good?", abort=True)

    async def main() -> dict[str, list[str]]:
        deleted: dict[str, list[str]] = {}
        for name in await queue_names(app, params["queue"]):
            ids = await app.queue(name).purge(**selection)
            if ids:
                deleted[name] = ids
        return deleted

    deleted = run(app, main)
    for name, ids in deleted.items():
        console.print(f"deleted {len(ids)} dead job(s) of queue {name!r}")
    if not deleted:
        console.print("no dead jobs matched; nothing deleted")


def _selection(
    job_ids: tuple[str, ...], filters: dict[str, Any], everything: bool
) -> dict[str, Any]:
    chosen = {k: v for k, v in filters.items() if v is not None}
    if sum([bool(job_ids), bool(chosen), everything]) != 1:
        raise click.UsageError(
            "choose the dead jobs in exactly one way: JOB_IDS, filters (--name, --reason, "
            "--error-type, --fingerprint, --since, --until, --older-than), or --all"
        )
    if job_ids:
        return {"job_ids": list(job_ids)}
    if everything:
        return {"all": True}
    return chosen


def _print_selected(console: Any, app: App, found: dict[str, list[str]], what: str) -> None:
    """The first SHOWN selected jobs as a jobs table, and how many there are in all."""
    total = sum(len(ids) for ids in found.values())
    if not total:
        console.print(f"no dead jobs matched; nothing {what.split()[-1]}")
        return

    async def load() -> list[JobRecord]:
        records: list[JobRecord] = []
        for name, ids in found.items():
            for job_id in ids[: SHOWN - len(records)]:
                job = await app.queue(name).get_job(job_id)
                if job is not None and job.record is not None:
                    records.append(job.record)
        return records

    records = run(app, load)
    console.print(jobs_table(records, title=f"{total} dead job(s) {what}"))
    if total > len(records):
        console.print(f"... and {total - len(records)} more")
