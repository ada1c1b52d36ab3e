"""``shigoto stats``: jobs per state for every queue, which queues are paused, and the
rate limits of those that have some."""

from __future__ import annotations

import click
import msgspec
from rich.table import Table

from ..app import App
from ..backends import Capabilities, open_backend
from ..errors import ConfigurationError
from .render import counts_table, make_console
from .session import open_app, run, url_option


async def queue_counts(
    app: App, names: list[str] | None = None
) -> tuple[dict[str, dict[str, int]], dict[str, bool]]:
    """Counts per state and the paused flag of ``names`` (default: every queue)."""
    if names is None:
        names = await (await app.backend()).queues()
    counts = {name: await app.queue(name).counts() for name in names}
    paused = {name: await app.queue(name).is_paused() for name in names}
    return counts, paused


async def queue_limits(app: App, names: list[str]) -> dict[str, dict[str, object]]:
    """The limits of the queues in ``names`` that have any (shigoto.limits)."""
    backend = await app.backend()
    if not backend.capabilities.rate_limits:
        return {}
    found = {name: await app.queue(name).limits() for name in names}
    return {name: limits for name, limits in found.items() if any(limits.values())}


def limits_table(limits: dict[str, dict[str, object]]) -> Table:
    table = Table(title="limits", title_justify="left")
    for column in ("queue", "rate_limit", "max_active", "group_rate_limit", "held until"):
        table.add_column(column)
    for name, row in limits.items():
        held = row["held_until_ms"]
        table.add_row(
            name,
            *(str(row[key] or "-") for key in ("rate_limit", "max_active", "group_rate_limit")),
            "-" if held is None else f"[bold yellow]{held}[/]",
        )
    return table


@click.command(short_help="Jobs per state for every queue.")
@click.option("-q", "--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "-m", "--metrics", "show_metrics", is_flag=True, help="Also show rates and latencies."
)
@click.option("-w", "--watch", is_flag=True, help="Live view, redrawn every second; q quits.")
@click.option("--frames", type=int, default=None, hidden=True, help="Stop after N redraws.")
@url_option
@click.pass_context
def stats(
    ctx: click.Context,
    queues: tuple[str, ...],
    as_json: bool,
    show_metrics: bool,
    watch: bool,
    frames: int | None,
) -> None:
    """Count jobs per state for every queue, and show which queues are paused.

    Also lists jobs that ran past their handler's target duration (split them) and
    live workers (a worker that stopped claiming is shown as stuck). --metrics adds
    throughput, failure rate, latency and alert state; --watch keeps it all on screen.
    """
    from . import watch as live

    app = open_app(ctx)
    capabilities = open_backend(app.url).capabilities
    if not capabilities.job_records:
        _stats_without_records(app, capabilities, list(queues), as_json, show_metrics or watch)
        return
    if watch:
        run(app, lambda: live.watch(app, list(queues) or None, iterations=frames))
        return
    counts, paused = run(app, lambda: queue_counts(app, list(queues) or None))
    extra = run(app, lambda: live.gather(app, list(counts)))
    limits = run(app, lambda: queue_limits(app, list(counts)))
    if as_json:
        from ..metrics import describe

        data = {
            name: {
                **counts[name],
                "paused": paused[name],
                "limits": limits.get(name),
                "metrics": describe(snap),
            }
            for name, snap in zip(counts, extra[0], strict=True)
        }
        click.echo(msgspec.json.encode(data).decode())
        return
    console = make_console()
    if not counts:
        console.print(f"no queues yet at {app.url}")
        return
    console.print(counts_table(counts, paused, title=f"queues at {app.url}"))
    if limits:
        console.print(limits_table(limits))
    if show_metrics:
        console.print(live.metrics_table(extra[0], extra[1]))
        names = live.names_table(extra[0])
        if names is not None:
            console.print(names)
    for table in (live.slow_table(extra[0]), live.workers_table(extra[2])):
        if table is not None:
            console.print(table)


def _stats_without_records(
    app: App, capabilities: Capabilities, queues: list[str], as_json: bool, live: bool
) -> None:
    """A backend that keeps no job records (store-less amqp) cannot list queues, keep
    metrics or see workers: counts of the named queues only, and a note saying so."""
    hint = "add ?store=redis://HOST:6379/0 to the URL for job records, metrics and workers"
    if not queues:
        raise ConfigurationError(
            f"the {capabilities.name} backend here keeps no job records, so it cannot list "
            f"queues: name them with -q QUEUE ({hint})"
        )
    if live:
        raise ConfigurationError(
            f"--metrics and --watch need stored metrics, which the {capabilities.name} "
            f"backend here does not keep ({hint})"
        )
    counts, paused = run(app, lambda: queue_counts(app, queues))
    note = (
        f"{capabilities.name} without a record store: counts are the broker's view "
        "(waiting = ready messages, delayed = messages in this process's delay buckets, "
        "dead = messages in <queue>.dead); finished jobs are not kept"
    )
    if as_json:
        data = {name: {**counts[name], "paused": paused[name]} for name in counts}
        click.echo(msgspec.json.encode({"queues": data, "note": note}).decode())
        return
    console = make_console()
    console.print(counts_table(counts, paused, title=f"queues at {app.url}"))
    console.print(f"[dim]{note}; {hint}[/]")
