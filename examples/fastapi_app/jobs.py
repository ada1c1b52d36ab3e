"""The jobs of the FastAPI example: one App, typed handlers.

The URL comes from ``SHIGOTO_URL`` (``App()`` falls back to ``sqlite:///shigoto.db``), so
the same module serves the web process and ``shigoto worker fastapi_app.jobs:app``.
"""

from __future__ import annotations

from shigoto import App, JobContext

app = App()

sent: list[str] = []
"""Stands in for a real mail service in this example."""


@app.job(queue="email", attempts=5)
async def send_welcome(ctx: JobContext, user_id: int) -> str:
    address = f"user{user_id}@example.com"  # look the user up here: pass ids, not data
    sent.append(address)
    return address
