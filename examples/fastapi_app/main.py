"""FastAPI: enqueue from an endpoint; the App's lifetime follows the web app's.

Run it (from ``examples/``)::

    SHIGOTO_URL=sqlite:///jobs.db uvicorn fastapi_app.main:api
    SHIGOTO_URL=sqlite:///jobs.db shigoto worker fastapi_app.jobs:app      # elsewhere

The lifespan closes the backend connection on shutdown. With ``EMBEDDED_WORKER=1`` it
also runs a worker inside the web process (handy for development and small apps;
production runs ``shigoto worker`` processes apart from the web servers).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException

from shigoto import Worker

from .jobs import app as jobs
from .jobs import send_welcome


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    worker: Worker | None = None
    task: asyncio.Task[None] | None = None
    if os.environ.get("EMBEDDED_WORKER") == "1":
        worker = jobs.worker(concurrency=5, handle_signals=False)  # uvicorn owns signals
        task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        if worker is not None and task is not None:
            worker.stop()
            await task
        await jobs.close()


api = FastAPI(lifespan=lifespan)


@api.post("/users/{user_id}/welcome", status_code=202)
async def welcome(user_id: int) -> dict[str, str]:
    # job_id makes the request idempotent: a double submit does not mail twice.
    job = await send_welcome.with_options(job_id=f"welcome:{user_id}").enqueue(user_id=user_id)
    return {"job_id": job.id}


@api.get("/jobs/{job_id}")
async def job_status(job_id: str) -> dict[str, object]:
    job = await jobs.queue("email").get_job(job_id)
    if job is None or job.record is None:
        raise HTTPException(404, f"no job {job_id!r} in queue 'email'")
    return {"state": job.record.state.value, "result": job.record.result_value}
