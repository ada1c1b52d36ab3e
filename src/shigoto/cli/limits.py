"""``shigoto limits``: read or set a queue's rate limits and concurrency cap.

The limits are queue settings in the backend (shigoto.limits), so setting them here
reaches every running worker at its next claim; no restart.
"""

from __future__ import annotations

from typing import Any

import click
import msgspec

from .render import make_console
from .session import open_app, run, url_option
from .stats import limits_table, queue_limits


@click.command(short_help="Show or set queue rate limits and max_active.")
@click.argument("queue", required=False)
@click.option("--rate", "rate_limit", help="Jobs per sliding window: 100/s, 600/m, 10/h, 5/10s.")
@click.option("--max-active", type=int, help="Jobs running at once, across all workers.")
@click.option("--group-rate", "group_rate_limit", help="Per rate-limit group (tenant): 10/s.")
@click.option("--clear", is_flag=True, help="Remove every limit of QUEUE.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@url_option
@click.pass_context
def limits(
    ctx: click.Context,
    queue: str | None,
    rate_limit: str | None,
    max_active: int | None,
    group_rate_limit: str | None,
    clear: bool,
    as_json: bool,
) -> None:
    """Show the limits of QUEUE (default: every queue that has some), or set them.

    Setting replaces all of the queue's limits: options left out are removed
    (`shigoto limits email --rate 100/s` drops a max_active set before).
    """
    setting = clear or any(v is not None for v in (rate_limit, max_active, group_rate_limit))
    if setting and queue is None:
        raise click.UsageError("name the QUEUE whose limits to set")
    app = open_app(ctx, must_exist=not setting)

    async def main() -> dict[str, dict[str, Any]]:
        if setting:
            assert queue is not None
            await app.queue(queue).set_limits(
                rate_limit=rate_limit, max_active=max_active, group_rate_limit=group_rate_limit
            )
        if queue is not None:
            return {queue: await app.queue(queue).limits()}
        names = await (await app.backend()).queues()
        return await queue_limits(app, names)

    found = run(app, main)
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    console = make_console()
    if not found:
        console.print("no queue has limits")
        return
    console.print(limits_table(found))
