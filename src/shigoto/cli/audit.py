"""``shigoto audit``: read the audit trail (who did what, when)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import msgspec
from rich.table import Table

from ..backends.contract import AuditEntry
from ..errors import ConfigurationError
from ..security.audit import details_of
from .render import make_console
from .session import open_app, run, url_option

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: datetime) -> int:
    """``30m``, ``2h``, ``7d`` ago, or an ISO-8601 time (UTC unless it says otherwise)."""
    text = value.strip()
    if text and text[-1] in _UNITS and text[:-1].replace(".", "", 1).isdigit():
        return int(
            (now - timedelta(seconds=float(text[:-1]) * _UNITS[text[-1]])).timestamp() * 1000
        )
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(
            f"--since {value!r}: use a duration (30m, 2h, 7d) or an ISO time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def entry_dict(entry: AuditEntry) -> dict[str, object]:
    out: dict[str, object] = msgspec.to_builtins(entry)
    out["details"] = details_of(entry)
    out["at"] = datetime.fromtimestamp(entry.at_ms / 1000, UTC).isoformat()
    return out


@click.command("audit")
@click.option("--job", "job_id", default=None, help="Only entries about this job id.")
@click.option("--actor", default=None, help="Only entries by this actor.")
@click.option("--action", default=None, help="Only this action (enqueue, cancel, job.start...).")
@click.option("-q", "--queue", default=None, help="Only this queue.")
@click.option("--since", default=None, help="Since a duration ago (30m, 2h, 7d) or an ISO time.")
@click.option("-n", "--limit", default=100, show_default=True, help="Newest N entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@url_option
@click.pass_context
def audit(
    ctx: click.Context,
    job_id: str | None,
    actor: str | None,
    action: str | None,
    queue: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The audit trail, newest first: enqueues, cancels, redrives, purges, pauses,
    schedule changes, key rotations, job starts and ends, and who did each."""
    app = open_app(ctx)
    since_ms = None if since is None else parse_since(since, datetime.now(UTC))
    entries = run(
        app,
        lambda: app.audit.query(
            job_id=job_id, actor=actor, action=action, queue=queue, since_ms=since_ms, limit=limit
        ),
    )
    if as_json:
        for entry in entries:
            click.echo(msgspec.json.encode(entry_dict(entry)).decode())
        return
    console = make_console()
    if not entries:
        console.print("no audit entries matched")
        return
    table = Table(show_edge=False)
    for column in ("time (UTC)", "actor", "action", "queue", "job", "details"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        details = details_of(entry)
        table.add_row(
            datetime.fromtimestamp(entry.at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            entry.actor,
            entry.action,
            entry.queue or "-",
            entry.job_id or "-",
            " ".join(f"{k}={v}" for k, v in details.items()) or "-",
        )
    console.print(table)
