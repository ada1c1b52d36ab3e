"""An app with schedules for the CLI tests (``tests.e2e.schedule_app:app``).

The URL comes from ``SHIGOTO_URL``, which each test points at its own SQLite file.
"""

from __future__ import annotations

from shigoto import App, JobContext

app = App()


@app.every(1, queue="ticks")
async def beat(ctx: JobContext) -> str | None:
    """Returns the tick it ran for, so tests can read it back from the job's result."""
    return ctx.scheduled_at.isoformat() if ctx.scheduled_at else None


@app.cron("0 9 * * *", tz="Asia/Tokyo", name="daily-report", misfire="run_once")
async def daily_report(ctx: JobContext) -> None: ...
