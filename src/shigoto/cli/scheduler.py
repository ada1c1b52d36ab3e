"""``shigoto scheduler APP`` fires schedules; ``shigoto schedules [APP]`` lists them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import click
import msgspec
from rich.table import Table

from ..app import App
from ..backends import open_backend
from ..backends.contract import ScheduleState
from ..clock import SystemClock
from ..job import JobState
from ..schedule import Schedule
from ..scheduler import require_schedules, resolve
from .loading import load_app
from .render import fmt_duration, make_console, state_text
from .session import configure_logging, given_url, log_level, open_app, run, url_option

log = logging.getLogger("shigoto.cli")

NEXT_FIRES = 3


def app_for(ctx: click.Context, app_spec: str) -> App:
    """The user's App, pointed at ``--url`` / ``SHIGOTO_URL`` when one was given."""
    app = load_app(app_spec)
    url = given_url(ctx)
    if url and url != app.url:
        open_backend(url)  # validate before swapping
        app.url = url
    return app


@click.command()
@click.argument("app_spec", metavar="APP")
@click.option(
    "--poll",
    "poll_s",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest sleep between passes: how soon a schedule added at run time is noticed.",
)
@url_option
@click.pass_context
def scheduler(ctx: click.Context, app_spec: str, poll_s: float) -> None:
    """Fire the schedules of APP (`module:attribute`): those declared with @app.cron /
    @app.every, and those added at run time with app.schedule().

    Run several (on other machines, or with `shigoto worker --with-scheduler`) for
    availability: each tick is claimed atomically in the backend, so exactly one of
    them fires it; no leader election. Stops on SIGTERM or SIGINT.
    """
    configure_logging(log_level(ctx, "info"))
    app = app_for(ctx, app_spec)
    if not app.schedules.declared:
        log.warning("app %s declares no schedules; firing run-time schedules only", app_spec)
    instance = app.scheduler(poll_s=poll_s)
    log.info("shigoto scheduler: app=%s url=%s", app_spec, app.url)
    run(app, instance.run)
    click.echo(f"scheduler stopped: {instance.fired} tick(s) fired", err=True)


@click.command()
@click.argument("app_spec", metavar="[APP]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@url_option
@click.pass_context
def schedules(ctx: click.Context, app_spec: str | None, as_json: bool) -> None:
    """List schedules: expression, time zone, next three fire times (in the schedule's
    zone and in UTC) and the last run with its job's state.

    With APP, the schedules declared in its code are listed too; without it only run-time
    schedules have their definition (code ones show their last run).
    """
    app = app_for(ctx, app_spec) if app_spec else open_app(ctx)
    now_ms = SystemClock().now_ms()
    rows = run(app, lambda: gather(app, now_ms, with_code=app_spec is not None))
    if as_json:
        for row in rows:
            click.echo(msgspec.json.encode(row).decode())
        return
    console = make_console()
    if not rows:
        console.print(f"no schedules at {app.url}")
        return
    console.print(schedules_table(rows, title=f"schedules at {app.url} ({len(rows)})"))


async def gather(app: App, now_ms: int, *, with_code: bool) -> list[dict[str, Any]]:
    """One plain dict per schedule, ready for a table or JSON."""
    backend = await app.backend()
    require_schedules(backend)
    states = {s.name: s for s in await backend.schedule_states()}
    rows = []
    for schedule in resolve(app.schedules.declared, list(states.values())):
        source = "code" if schedule.name in app.schedules.declared else "run time"
        row = describe(schedule, now_ms) | {"source": source}
        row["last"] = await last_run(app, states.get(schedule.name))
        rows.append(row)
    known = {row["name"] for row in rows}
    for state in states.values():
        if state.name in known:
            continue
        note = "not in the app's code (removed?)" if with_code else "declared in code"
        rows.append({"name": state.name, "source": note, "last": await last_run(app, state)})
    return sorted(rows, key=lambda r: str(r["name"]))


def describe(schedule: Schedule, now_ms: int) -> dict[str, Any]:
    zone = ZoneInfo(schedule.tz)
    return {
        "name": schedule.name,
        "job": schedule.job,
        "queue": schedule.queue,
        "when": schedule.when,
        "tz": schedule.tz,
        "misfire": schedule.misfire.value,
        "next": [
            {"local": _stamp(fire, zone), "utc": _stamp(fire, UTC), "ms": fire}
            for fire in schedule.next_fires(now_ms, NEXT_FIRES)
        ],
    }


async def last_run(app: App, state: ScheduleState | None) -> dict[str, Any] | None:
    """The newest claimed tick, how late it was claimed, and its job's current state."""
    if state is None or state.last_fire_ms is None:
        return None
    job_state: str = "unknown"
    if state.last_queue and state.last_job_id:
        record = await app.queue(state.last_queue).get_job(state.last_job_id)
        job_state = record.record.state.value if record and record.record else "removed"
    late = None if state.last_claimed_ms is None else state.last_claimed_ms - state.last_fire_ms
    return {
        "fire_utc": _stamp(state.last_fire_ms, UTC),
        "fire_ms": state.last_fire_ms,
        "late_ms": late,
        "job_id": state.last_job_id,
        "queue": state.last_queue,
        "state": job_state,
    }


def _stamp(ms: int, zone: Any) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def schedules_table(rows: list[dict[str, Any]], *, title: str) -> Table:
    table = Table(title=title, title_justify="left", show_lines=True)
    table.add_column("schedule")
    table.add_column("job → queue")
    table.add_column("when")
    table.add_column(f"next {NEXT_FIRES} (zone, UTC)", no_wrap=True)
    table.add_column("last run", overflow="fold")
    for row in rows:
        if "when" not in row:
            table.add_row(row["name"], f"[dim]{row['source']}[/]", "-", "-", _last(row))
            continue
        upcoming = "\n".join(_pair(n["local"], n["utc"]) for n in row["next"]) or "never"
        table.add_row(
            row["name"] + ("" if row["source"] == "code" else "\n[dim](run time)[/]"),
            f"{row['job']} → {row['queue']}",
            f"{row['when']}\n[dim]{row['tz']}\nmisfire: {row['misfire']}[/]",
            upcoming,
            _last(row),
        )
    return table


def _pair(local: str, utc: str) -> str:
    """``2024-01-02 09:00:00 JST (00:00:00 UTC)``; the UTC date only when it differs."""
    if local == utc:
        return local
    same_day = local[:10] == utc[:10]
    return f"{local} [dim]({utc[11:] if same_day else utc[5:]})[/]"


def _last(row: dict[str, Any]) -> str:
    last = row.get("last")
    if not last:
        return "[dim]never[/]"
    state = last["state"]
    shown = state_text(state) if state in {s.value for s in JobState} else f"[dim]{state}[/]"
    late = "" if last["late_ms"] is None else f", fired {fmt_duration(last['late_ms'])} late"
    return f"{last['fire_utc']}: {shown}{late}\n[dim]{last['job_id']}[/]"
