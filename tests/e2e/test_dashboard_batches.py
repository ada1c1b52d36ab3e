"""The dashboard's Batches page and ``/api/batches``: progress, failures, follow-up."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette suggests httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from shigoto import App, UnrecoverableError
from shigoto.dashboard import Credential, Role, create_app
from shigoto.testing import run_until_empty

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "viewer-token-" + "z" * 16
USERS = [Credential("token:viewer", Role.VIEWER, token=TOKEN)]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def seed(url: str) -> tuple[str, str]:
    """A finished batch with one dead chunk, and a running one."""

    async def main() -> tuple[str, str]:
        app = App(url)

        @app.job(queue="imports", attempts=1)
        async def rows(ctx: object, items: list[int], **_: object) -> None:
            if 3 in items:
                raise UnrecoverableError("row 3 is broken")

        @app.job(queue="imports")
        async def report(ctx: object) -> None:
            return None

        try:
            queue = app.queue("imports")
            done = await queue.add_chunks("rows", range(6), chunk_size=2, on_complete="report")
            await run_until_empty(app, "imports", concurrency=2)
            await done.wait_until_finished(timeout=20)
            running = await queue.add_chunks("rows", range(4), chunk_size=2)
            return done.id, running.id
        finally:
            await app.close()

    return asyncio.run(main())


def test_batches_page_and_api_show_progress_failures_and_follow_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / f'dash-{uuid.uuid4().hex[:8]}.db'}?poll=0.02"
    done, running = seed(url)
    with TestClient(create_app(App(url), users=USERS)) as client:
        api = client.get("/api/batches", headers=AUTH)
        assert api.status_code == 200, api.text
        rows = {row["id"]: row for row in api.json()["batches"]}
        assert (rows[done]["status"], rows[done]["dead"], rows[done]["failed_chunks"]) == (
            "completed_with_failures", 1, [1],
        )  # fmt: skip
        assert rows[done]["follow_up_id"] == f"{done}:follow-up"
        assert (rows[running]["status"], rows[running]["percent"]) == ("running", 0.0)
        assert list(rows) == [running, done]  # newest first

        page = client.get("/batches", headers=AUTH)
        assert page.status_code == 200
        assert done in page.text and running in page.text
        assert "completed_with_failures" in page.text and f"{done}:follow-up" in page.text
        assert "/api/batches" in client.get("/api/openapi.json", headers=AUTH).json()["paths"]
        assert client.get("/api/batches").status_code == 401
