"""The Flask example: request threads enqueue with the sync API; a worker runs them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

pytest.importorskip("flask")

from shigoto import App
from shigoto.testing import run_until_empty_sync


def test_views_enqueue_with_enqueue_sync_and_add_sync(
    shigoto_isolate: Callable[[App], App],
) -> None:
    from flask_app.app import jobs, web

    shigoto_isolate(jobs)
    client = web.test_client()
    accepted = client.post("/images/42/thumbnail")
    assert accepted.status_code == 202
    job_id = accepted.get_json()["job_id"]
    report = client.post("/reports/weekly").get_json()["job_id"]
    assert jobs.queue("reports").get_job_sync(report).record.data == {"name": "weekly"}

    worker = run_until_empty_sync(jobs, "images")
    assert worker.processed == 1
    status = client.get(f"/images/jobs/{job_id}").get_json()
    assert status == {"state": "completed", "result": "thumbs/42-128.png"}
    assert client.get("/images/jobs/nope").status_code == 404
