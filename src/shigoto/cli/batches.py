"""``shigoto enqueue`` (one job, or a JSON-lines file in bulk with a progress bar) and
``shigoto batches`` (list, show, cancel chunked batches)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
import msgspec
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..batches import Batch, BatchError
from ..errors import ConfigurationError
from .render import fmt_time, make_console
from .session import open_app, run, url_option

_decoder = msgspec.json.Decoder()


# -- enqueue ---------------------------------------------------------------------------


def _lines(handle: IO[bytes], read: list[int]) -> Iterator[tuple[int, Any]]:
    """``(line number, decoded value)`` of each non-blank line; ``read[0]`` counts bytes."""
    for number, line in enumerate(handle, start=1):
        read[0] += len(line)
        if not line.strip():
            continue
        try:
            yield number, _decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise ConfigurationError(f"line {number}: not valid JSON: {exc}") from None


@click.command()
@click.argument("name", required=False)
@click.option("-q", "--queue", default="default", show_default=True, help="The queue.")
@click.option("-d", "--data", default=None, help="Job data as a JSON object (one job).")
@click.option(
    "--bulk",
    "bulk",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='A JSON-lines file: one job per line, {"name": ..., "data": {...}, '
    '"priority": ...}; with --chunks, one item per line.',
)
@click.option(
    "--chunks",
    "chunk_job",
    default=None,
    metavar="NAME",
    help="With --bulk: enqueue the lines as the items of one batch of NAME jobs.",
)
@click.option("--chunk-size", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option(
    "--on-complete",
    default=None,
    metavar="NAME",
    help="With --chunks: the follow-up job to run once every chunk has finished.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@url_option
@click.pass_context
def enqueue(
    ctx: click.Context,
    name: str | None,
    queue: str,
    data: str | None,
    bulk: Path | None,
    chunk_job: str | None,
    chunk_size: int,
    on_complete: str | None,
    no_progress: bool,
) -> None:
    """Enqueue one job (NAME with --data), or many from a JSON-lines file (--bulk).

    A bulk file is streamed: memory stays bounded however many lines it has.
    """
    app = open_app(ctx, must_exist=False)
    console = make_console(stderr=True)
    if bulk is None:
        if name is None:
            raise click.UsageError("give a job NAME (with --data), or --bulk FILE.jsonl")
        try:
            payload = json.loads(data) if data else {}
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--data") from None

        async def one() -> str:
            return (await app.queue(queue).add(name, payload)).id

        click.echo(run(app, one))
        return
    if name is not None or data is not None:
        raise click.UsageError("--bulk takes no NAME or --data (they come from the file)")
    size = os.path.getsize(bulk)
    read = [0]
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[stored]}"),
        TimeElapsedColumn(),
        console=console,
        disable=no_progress or not console.is_terminal,
    )
    task = progress.add_task(bulk.name, total=size or 1, stored="")

    def jobs_stored(stored: int) -> None:
        progress.update(task, completed=read[0], stored=f"{stored:,} jobs")

    def items_stored(items: int, chunks: int) -> None:
        progress.update(task, completed=read[0], stored=f"{items:,} items, {chunks:,} chunks")

    async def main() -> str:
        with bulk.open("rb") as handle, progress:
            target = app.queue(queue)
            if chunk_job is not None:
                items = (value for _, value in _lines(handle, read))
                batch = await target.add_chunks(
                    chunk_job,
                    items,
                    chunk_size=chunk_size,
                    on_complete=on_complete,
                    on_progress=items_stored,
                )
                return (
                    f"batch {batch.id}: {batch.total_items:,} items in "
                    f"{batch.total_chunks:,} chunks on queue {queue}"
                )
            stored = [0]

            def counted(n: int) -> None:
                stored[0] = n
                jobs_stored(n)

            await target.add_bulk(
                (_job_line(number, value) for number, value in _lines(handle, read)),
                on_progress=counted,
                return_jobs=False,
            )
            return f"{stored[0]:,} jobs enqueued on queue {queue}"

    click.echo(run(app, main))


def _job_line(number: int, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConfigurationError(
            f'line {number}: expected an object with a "name", got {str(value)[:80]}'
        )
    return value


# -- batches ---------------------------------------------------------------------------


def _row(batch: Batch) -> dict[str, Any]:
    r = batch.record
    assert r is not None
    return {
        "id": batch.id,
        "queue": r.queue,
        "name": r.name,
        "status": batch.status,
        "total_chunks": r.total_chunks,
        "total_items": r.total_items,
        "completed": r.completed,
        "dead": r.dead,
        "cancelled": r.cancelled,
        "failed_chunks": r.failed_chunks,
        "follow_up_id": r.follow_up_id,
        "created_ms": r.created_ms,
        "finished_ms": r.finished_ms,
    }


def _percent(batch: Batch) -> str:
    r = batch.record
    assert r is not None
    if not r.total_chunks:
        return "-" if r.total_chunks is None else "100%"
    return f"{100 * r.finals / r.total_chunks:.0f}%"


def _follow_up_text(batch: Batch) -> str:
    r = batch.record
    assert r is not None
    if r.finished_ms is None:
        return "pending"
    return r.follow_up_id.rsplit(":", 1)[-1] + " enqueued" if r.follow_up_id else "none"


@click.group(invoke_without_command=True)
@click.option("-q", "--queue", default=None, help="Only this queue (default: every queue).")
@click.option("--unfinished", is_flag=True, help="Only batches still running.")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@url_option
@click.pass_context
def batches(
    ctx: click.Context, queue: str | None, unfinished: bool, limit: int, as_json: bool
) -> None:
    """List batches (chunked jobs): progress, failures, follow-up status."""
    if ctx.invoked_subcommand is not None:
        return
    app = open_app(ctx)

    async def main() -> list[Batch]:
        names = [queue] if queue else await (await app.backend()).queues()
        found: list[Batch] = []
        for name in names:
            found += await app.queue(name).batches(unfinished=unfinished, limit=limit)
        found.sort(key=lambda b: b.record.created_ms if b.record else 0, reverse=True)
        return found[:limit]

    found = run(app, main)
    if as_json:
        for batch in found:
            click.echo(json.dumps(_row(batch)))
        return
    console = make_console()
    if not found:
        console.print("no batches")
        return
    table = Table(title="batches")
    table.add_column("id", overflow="fold", min_width=30)
    for column in (
        "queue",
        "job",
        "status",
        "chunks",
        "done",
        "dead",
        "cancelled",
        "progress",
        "follow-up",
        "created",
    ):
        table.add_column(column)
    for batch in found:
        r = batch.record
        assert r is not None
        table.add_row(
            batch.id,
            r.queue,
            r.name,
            batch.status,
            "-" if r.total_chunks is None else f"{r.total_chunks:,}",
            f"{r.completed:,}",
            f"{r.dead:,}",
            f"{r.cancelled:,}",
            _percent(batch),
            _follow_up_text(batch),
            fmt_time(r.created_ms),
        )
    console.print(table)


@batches.command("show")
@click.argument("batch_id")
@click.option("-q", "--queue", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@url_option
@click.pass_context
def show(ctx: click.Context, batch_id: str, queue: str, as_json: bool) -> None:
    """One batch: counts, combined progress, failed chunks, follow-up."""
    app = open_app(ctx)

    async def main() -> tuple[Batch, float]:
        batch = await app.queue(queue).get_batch(batch_id)
        if batch is None:
            raise BatchError(f"no batch {batch_id} in queue {queue!r}")
        return batch, await batch.progress()

    batch, percent = run(app, main)
    row = {**_row(batch), "progress": round(percent, 2)}
    if as_json:
        click.echo(json.dumps(row))
        return
    console = make_console()
    for key, value in row.items():
        if key.endswith("_ms"):
            value = fmt_time(value)
        console.print(f"[bold]{key}[/bold]: {value}")


@batches.command("cancel")
@click.argument("batch_id")
@click.option("-q", "--queue", default="default", show_default=True)
@url_option
@click.pass_context
def cancel(ctx: click.Context, batch_id: str, queue: str) -> None:
    """Cancel a batch: pending chunks cancelled, running ones flagged; no follow-up."""
    app = open_app(ctx)

    async def main() -> Batch:
        await app.queue(queue).cancel_batch(batch_id)
        batch = await app.queue(queue).get_batch(batch_id)
        assert batch is not None
        return batch

    batch = run(app, main)
    record = batch.record
    assert record is not None
    click.echo(
        f"batch {batch_id}: {batch.status}; {record.cancelled:,} chunk(s) cancelled, "
        f"{record.completed:,} completed"
    )
