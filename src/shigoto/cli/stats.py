"""``shigoto stats``: jobs per state for every queue, and which queues are paused."""

from __future__ import annotations

import click
import msgspec

from ..app import App
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


@click.command(short_help="Jobs per state for every queue.")
@click.option("-q", "--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@url_option
@click.pass_context
def stats(ctx: click.Context, queues: tuple[str, ...], as_json: bool) -> None:
    """Count jobs per state for every queue, and show which queues are paused."""
    app = open_app(ctx)
    counts, paused = run(app, lambda: queue_counts(app, list(queues) or None))
    if as_json:
        data = {name: {**counts[name], "paused": paused[name]} for name in counts}
        click.echo(msgspec.json.encode(data).decode())
        return
    console = make_console()
    if not counts:
        console.print(f"no queues yet at {app.url}")
        return
    console.print(counts_table(counts, paused, title=f"queues at {app.url}"))
