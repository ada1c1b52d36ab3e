"""``shigoto monitor``, ``shigoto alerts`` and ``shigoto metrics``: alerting and exposition."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import click
import msgspec
from rich.table import Table

from ..alerts import Monitor, RuleView, alert_history
from ..app import App
from ..backends import open_backend
from .loading import load_app
from .render import fmt_time, make_console
from .session import configure_logging, given_url, log_level, open_app, run, url_option

log = logging.getLogger("shigoto.cli")

STATE_STYLE = {"ok": "green", "pending": "yellow", "firing": "bold red", "resolved": "cyan"}


def app_for(ctx: click.Context, app_spec: str | None) -> App:
    """APP's App (its rules and sinks) with --url applied, or a plain App for the URL."""
    if app_spec is None:
        return open_app(ctx)
    app = load_app(app_spec)
    url = given_url(ctx)
    if url and url != app.url:
        open_backend(url)
        app.url = url
    return app


def fmt_value(view: RuleView) -> str:
    value = view.value
    if value is None:
        return "–"
    metric = view.rule.metric_name
    if metric == "failure_rate":
        return f"{value:.1%}"
    if metric.endswith("_s"):
        return f"{value:.1f} s"
    return f"{value:g}"


def fmt_threshold(view: RuleView) -> str:
    rule = view.rule
    if rule.metric_name == "failure_rate":
        return f"≥ {rule.threshold:.0%}"
    unit = " s" if rule.metric_name.endswith("_s") else ""
    return f"≥ {rule.threshold:g}{unit}"


def rules_table(views: list[RuleView]) -> Table:
    table = Table(title="alert rules", header_style="bold")
    for column in ("queue", "rule", "value", "threshold", "for", "state", "since"):
        table.add_column(column)
    for view in views:
        style = STATE_STYLE.get(view.state, "")
        table.add_row(
            view.queue,
            view.rule.name,
            fmt_value(view),
            fmt_threshold(view),
            f"{view.rule.for_s:g} s",
            f"[{style}]{view.state}[/]",
            fmt_time(view.status.since_ms) if view.status is not None else "",
        )
    return table


@click.command(short_help="Alert rules: current value, state, recent transitions.")
@click.argument("app_spec", metavar="[APP]", required=False)
@click.option("-q", "--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@click.option("--history", "history", default=10, show_default=True, help="Transitions shown.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@url_option
@click.pass_context
def alerts(
    ctx: click.Context, app_spec: str | None, queues: tuple[str, ...], history: int, as_json: bool
) -> None:
    """List alert rules with their current value and state, and recent transitions.

    With APP (module:attribute) its configured rules are shown; without, the brief's
    defaults (backlog ≥ 1000, failure rate ≥ 5 %, delay ≥ 5 min).
    """
    app = app_for(ctx, app_spec)
    monitor = Monitor(app, queues=list(queues) or None)

    async def main() -> tuple[list[RuleView], list[Any]]:
        # History first: a transition is stored with its state in one write, so states
        # read after it are at least as new, and the two never disagree (read the other
        # way round, a monitor could fire in between: "ok" above a "firing" entry).
        transitions = await alert_history(app, limit=history)
        return await monitor.views(), transitions

    views, transitions = run(app, main)
    if as_json:
        data = {
            "rules": [
                {
                    "queue": v.queue,
                    "rule": v.rule.name,
                    "value": v.value,
                    "threshold": v.rule.threshold,
                    "state": v.state,
                    "since_ms": v.status.since_ms if v.status else None,
                }
                for v in views
            ],
            "history": [msgspec.to_builtins(t) for t in transitions],
        }
        click.echo(msgspec.json.encode(data).decode())
        return
    console = make_console()
    if not views:
        console.print(f"no queues yet at {app.url}")
    else:
        console.print(rules_table(views))
    if transitions:
        table = Table(title="recent transitions", header_style="bold")
        for column in ("at", "queue", "rule", "from", "to", "value"):
            table.add_column(column)
        for t in transitions:
            style = STATE_STYLE.get(t.to_state, "")
            table.add_row(
                fmt_time(t.at_ms), t.queue, t.rule, t.from_state, f"[{style}]{t.to_state}[/]",
                "–" if t.value is None else f"{t.value:g}",
            )  # fmt: skip
        console.print(table)


@click.command(short_help="Evaluate APP's alert rules and notify its sinks.")
@click.argument("app_spec", metavar="APP")
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(min=0.1),
    default=15.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between evaluations.",
)
@click.option("-q", "--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@url_option
@click.pass_context
def monitor(ctx: click.Context, app_spec: str, interval_s: float, queues: tuple[str, ...]) -> None:
    """Evaluate APP's alert rules every --interval seconds and send transitions to its
    sinks (app.alerts). Safe to run several: each transition is notified once."""
    configure_logging(log_level(ctx, "info"))
    app = app_for(ctx, app_spec)
    instance = Monitor(app, interval_s=interval_s, queues=list(queues) or None)
    log.info("shigoto monitor: %d rule(s) on %s", len(app.alerts.rules), app.url)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, instance.stop)
        await instance.run()

    run(app, main)


@click.command(short_help="Serve Prometheus /metrics.")
@click.argument("app_spec", metavar="[APP]", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9808, show_default=True, type=int, help="Port to listen on.")
@click.option("--once", is_flag=True, help="Print the metrics once to stdout and exit.")
@url_option
@click.pass_context
def metrics(ctx: click.Context, app_spec: str | None, host: str, port: int, once: bool) -> None:
    """Serve every queue's metrics in the Prometheus text format at /metrics, until
    SIGINT (Ctrl-C) or SIGTERM."""
    from ..exporter import render, serve

    app = app_for(ctx, app_spec)
    if once:
        click.echo(run(app, lambda: render(app)).decode(), nl=False)
        return
    configure_logging(log_level(ctx, "info"))
    log.info("serving metrics of %s on http://%s:%d/metrics", app.url, host, port)

    async def main() -> None:
        # handled here, not left to KeyboardInterrupt: a supervisor stops with SIGTERM,
        # and a server started in the background (`&`) inherits SIGINT ignored
        serving = asyncio.current_task()
        assert serving is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, serving.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(app, host=host, port=port)
        log.info("metrics server stopped")

    with contextlib.suppress(KeyboardInterrupt):  # where signal handlers are not supported
        run(app, main)
