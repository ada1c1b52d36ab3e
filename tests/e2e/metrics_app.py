"""The app of the metrics/alerts CLI tests: a tight backlog rule on queue ``m``."""

from __future__ import annotations

from shigoto import App, JobContext

app = App()
app.alerts.configure("m", backlog=3, for_s=0)


@app.job(queue="m", attempts=1)
async def ok(ctx: JobContext) -> None:
    return None


@app.job(queue="m", attempts=1)
async def fail(ctx: JobContext) -> None:
    raise RuntimeError("expected")
