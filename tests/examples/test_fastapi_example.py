"""The FastAPI example: an endpoint enqueues, the lifespan-managed worker runs the job,
and a second endpoint reports its state."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from shigoto import App


def test_an_endpoint_enqueues_and_the_embedded_worker_runs_the_job(
    shigoto_isolate: Callable[[App], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi_app import jobs, main

    shigoto_isolate(jobs.app)
    monkeypatch.setenv("EMBEDDED_WORKER", "1")
    jobs.sent.clear()
    with TestClient(main.api) as client:
        accepted = client.post("/users/7/welcome")
        assert accepted.status_code == 202
        job_id = accepted.json()["job_id"]
        assert job_id == "welcome:7"
        assert client.post("/users/7/welcome").json()["job_id"] == job_id  # idempotent
        deadline = time.monotonic() + 10
        while (status := client.get(f"/jobs/{job_id}").json())["state"] != "completed":
            assert time.monotonic() < deadline, status
            time.sleep(0.02)
        assert status["result"] == "user7@example.com"
        assert client.get("/jobs/nope").status_code == 404
    assert jobs.sent == ["user7@example.com"]
