"""Flask (or any sync code): the blocking twins ``enqueue_sync`` and ``add_sync``.

Run it (from ``examples/``)::

    SHIGOTO_URL=sqlite:///jobs.db flask --app flask_app.app run
    SHIGOTO_URL=sqlite:///jobs.db shigoto worker flask_app.app:jobs

The ``*_sync`` calls run on one private event-loop thread owned by the App, so a
threaded WSGI server can call them from any request thread.
"""

from __future__ import annotations

from flask import Flask, abort

from shigoto import App, SyncJobContext

jobs = App()


@jobs.job(queue="images")
def make_thumbnail(ctx: SyncJobContext, image_id: int, width: int = 256) -> str:
    # A plain `def` handler runs in a worker thread and may block (PIL, boto3...).
    ctx.update_progress(100)
    return f"thumbs/{image_id}-{width}.png"


web = Flask(__name__)


@web.post("/images/<int:image_id>/thumbnail")
def thumbnail(image_id: int) -> tuple[dict[str, str], int]:
    job = make_thumbnail.enqueue_sync(image_id, width=128)
    return {"job_id": job.id}, 202


@web.post("/reports/<name>")
def report(name: str) -> tuple[dict[str, str], int]:
    # By name, without importing the handler (e.g. a job served by another service):
    job = jobs.queue("reports").add_sync("build_report", {"name": name}, priority=5)
    return {"job_id": job.id}, 202


@web.get("/images/jobs/<job_id>")
def status(job_id: str) -> dict[str, object]:
    job = jobs.queue("images").get_job_sync(job_id)
    if job is None or job.record is None:
        abort(404)
    return {"state": job.record.state.value, "result": job.record.result_value}
