"""``shigoto dashboard``: serve the web dashboard (starlette app on uvicorn)."""

from __future__ import annotations

import click

from .session import configure_logging, log_level, missing_sqlite_file, open_app, url_option


@click.command(short_help="Serve the web dashboard.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Run without credentials: anyone who reaches the port is an operator.",
)
@click.option(
    "--poll",
    "poll_s",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="How often open pages refresh their live parts.",
)
@url_option
@click.pass_context
def dashboard(
    ctx: click.Context, host: str, port: int, insecure_no_auth: bool, poll_s: float
) -> None:
    """Serve the dashboard: queues, jobs, dead letters, schedules, workers.

    Sign-in is required: set SHIGOTO_DASHBOARD_TOKEN, or SHIGOTO_DASHBOARD_USER and
    SHIGOTO_DASHBOARD_PASSWORD (read-only users: SHIGOTO_DASHBOARD_READONLY_TOKEN or
    SHIGOTO_DASHBOARD_READONLY_USER / _PASSWORD). Without any, the dashboard refuses
    to start unless --insecure-no-auth is given.
    """
    try:
        import uvicorn

        from ..dashboard import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs the 'dashboard' extra: pip install 'shigoto[dashboard]' ({exc})"
        ) from None
    level = log_level(ctx, "info")
    configure_logging(level)
    app = open_app(ctx, must_exist=False)
    missing = missing_sqlite_file(app.url)
    if missing is not None:
        click.echo(f"note: no SQLite database at {missing} yet (check --url)", err=True)
    web = create_app(app, insecure_no_auth=insecure_no_auth, poll_ms=int(poll_s * 1000))
    click.echo(f"shigoto dashboard for {app.url} on http://{host}:{port}/", err=True)
    uvicorn.run(web, host=host, port=port, log_level=level.lower(), access_log=False)
