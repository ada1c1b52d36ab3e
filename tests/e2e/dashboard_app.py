"""The app the dashboard browser tests run a worker for (``shigoto worker
tests.e2e.dashboard_app:app``); the URL comes from ``SHIGOTO_URL``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shigoto import App, JobContext, UnrecoverableError

app = App()


@app.job(queue="mail")
async def send_mail(ctx: JobContext, user_id: int) -> str:
    await ctx.update_progress(50)
    await asyncio.sleep(0.05)
    return f"sent to {user_id}"


@app.job(queue="mail", attempts=1)
async def needs_file(ctx: JobContext, path: str) -> str:
    """Dies until ``path`` exists: a job an operator fixes, then redrives."""
    if not Path(path).exists():
        raise UnrecoverableError(f"template {path} is missing")
    return "delivered"
