"""A small app the CLI tests run with ``shigoto worker tests.e2e.sample_app:app``.

The URL comes from ``SHIGOTO_URL``, which each test points at its own SQLite file.
"""

from __future__ import annotations

import asyncio

from shigoto import App, JobContext, SyncJobContext, UnrecoverableError

app = App()


@app.job(queue="e2e")
async def add(ctx: JobContext, a: int, b: int) -> int:
    return a + b


@app.job(queue="e2e")
def shout(ctx: SyncJobContext, text: str) -> str:
    ctx.update_progress(100)
    return text.upper()


@app.job(queue="e2e", attempts=3)
async def reject(ctx: JobContext, order_id: int) -> None:
    raise UnrecoverableError(f"order {order_id} violates a business rule")


@app.job(queue="slow")
async def nap(ctx: JobContext, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "rested"
