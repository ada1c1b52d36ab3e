"""The dashboard's remove and promote actions (issue 7) over HTTP: buttons on the job
page, the operator role and CSRF, the JSON API and its OpenAPI document, and the audit
trail naming the signed-in user, never the server process."""

from __future__ import annotations

import asyncio
import re
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette suggests httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from shigoto import App, UnrecoverableError
from shigoto.dashboard import Credential, Role, create_app
from shigoto.security.audit import default_actor
from shigoto.testing import run_until_empty

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OP_TOKEN = "operator-token-" + "x" * 16
RO_TOKEN = "viewer-token-" + "y" * 16
USERS = [
    Credential("alice", Role.OPERATOR, password="correct horse"),
    Credential("token:operator", Role.OPERATOR, token=OP_TOKEN),
    Credential("token:viewer", Role.VIEWER, token=RO_TOKEN),
]
OPERATOR = {"Authorization": f"Bearer {OP_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {RO_TOKEN}"}


def seed(url: str) -> dict[str, str]:
    """Queue ``mail``: a dead job, then a waiting and a delayed one."""

    async def main() -> dict[str, str]:
        app = App(url)

        @app.job(queue="mail", attempts=1)
        async def broken(ctx: object) -> None:
            raise UnrecoverableError("bad")

        try:
            queue = app.queue("mail")
            dead = await queue.add("broken", {})
            await run_until_empty(app, "mail", concurrency=1)
            waiting = await queue.add("broken", {})
            delayed = await queue.add("broken", {}, delay=3600)
            return {"dead": dead.id, "waiting": waiting.id, "delayed": delayed.id}
        finally:
            await app.close()

    return asyncio.run(main())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / f'dash-{uuid.uuid4().hex[:8]}.db'}?poll=0.02"


@pytest.fixture
def ids(url: str) -> dict[str, str]:
    return seed(url)


@pytest.fixture
def client(url: str, ids: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(App(url), users=USERS)) as c:
        yield c


def sign_in(client: TestClient, user: str, password: str) -> str:
    page = client.get("/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert nonce is not None
    done = client.post(
        "/login",
        data={"csrf": nonce.group(1), "user": user, "password": password, "next": "/"},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    token = re.search(r'<meta name="csrf-token" content="([^"]*)"', client.get("/").text)
    assert token is not None
    return token.group(1)


def state_of(client: TestClient, job_id: str) -> str | None:
    response = client.get(f"/api/job?queue=mail&id={job_id}", headers=OPERATOR)
    if response.status_code == 404:
        return None
    return str(response.json()["state"])


def test_the_job_page_offers_promote_for_delayed_jobs_and_remove_with_a_confirmation(
    client: TestClient, ids: dict[str, str]
) -> None:
    sign_in(client, "alice", "correct horse")
    delayed = client.get(f"/job?queue=mail&id={ids['delayed']}").text
    assert 'data-action="promote"' in delayed and 'data-action="remove"' in delayed
    form = re.search(r'<form[^>]*actions/remove"[^>]*>', delayed)
    assert form is not None and "data-confirm=" in form.group(0)
    for name in ("waiting", "dead"):
        page = client.get(f"/job?queue=mail&id={ids[name]}").text
        assert 'data-action="remove"' in page and 'data-action="promote"' not in page


def test_an_operator_removes_a_job_through_the_form_and_returns_to_its_queue(
    client: TestClient, ids: dict[str, str]
) -> None:
    csrf = sign_in(client, "alice", "correct horse")
    refused = client.post(
        "/actions/remove", data={"queue": "mail", "id": ids["dead"]}, follow_redirects=False
    )
    assert refused.status_code == 403 and state_of(client, ids["dead"]) == "dead"

    done = client.post(
        "/actions/remove",
        data={"queue": "mail", "id": ids["dead"], "csrf": csrf, "next": "/queue?queue=mail"},
        follow_redirects=False,
    )

    assert done.status_code == 303
    assert done.headers["location"].startswith("/queue?queue=mail")
    assert "removed" in done.headers["location"]
    assert state_of(client, ids["dead"]) is None
    counts = client.get("/api/queue?queue=mail", headers=OPERATOR).json()["counts"]
    assert counts["dead"] == 0 and counts["waiting"] == 1 and counts["delayed"] == 1


def test_promote_and_remove_through_the_api_are_recorded_with_the_user(
    client: TestClient, ids: dict[str, str]
) -> None:
    csrf = sign_in(client, "alice", "correct horse")
    headers = {"X-CSRF-Token": csrf}

    promoted = client.post(
        "/api/actions/promote", json={"queue": "mail", "id": ids["delayed"]}, headers=headers
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["promoted"] is True
    assert state_of(client, ids["delayed"]) == "waiting"
    again = client.post(
        "/api/actions/promote", json={"queue": "mail", "id": ids["delayed"]}, headers=headers
    )
    assert again.json()["promoted"] is False  # no longer delayed

    removed = client.post(
        "/api/actions/remove", json={"queue": "mail", "id": ids["waiting"]}, headers=headers
    )
    assert removed.json()["removed"] is True and state_of(client, ids["waiting"]) is None
    gone = client.post(
        "/api/actions/remove", json={"queue": "mail", "id": ids["waiting"]}, headers=headers
    )
    assert gone.json()["removed"] is False
    missing_id = client.post("/api/actions/remove", json={"queue": "mail"}, headers=headers)
    assert missing_id.status_code == 400 and "job id" in missing_id.json()["error"]
    dry = client.post(
        "/api/actions/promote",
        json={"queue": "mail", "id": ids["dead"], "dry_run": True},
        headers=headers,
    )
    assert dry.status_code == 400 and "no dry run" in dry.json()["error"]

    entries = client.get("/api/audit", headers=OPERATOR).json()["entries"]
    mine = [
        e for e in entries if e["action"] in ("remove", "promote") or "dashboard." in e["action"]
    ]
    core = {(e["action"], e["target"]) for e in entries if e["action"] in ("remove", "promote")}
    assert core == {("remove", ids["waiting"]), ("promote", ids["delayed"])}
    assert all(e["user"].startswith("alice") for e in mine), mine
    # two tries of each through the dashboard, one core entry each for what happened
    assert len(mine) == 6 and default_actor() not in {e["user"] for e in mine}, mine


def test_a_viewer_can_neither_remove_nor_promote(client: TestClient, ids: dict[str, str]) -> None:
    for action, job_id in (("remove", ids["dead"]), ("promote", ids["delayed"])):
        refused = client.post(
            f"/api/actions/{action}", json={"queue": "mail", "id": job_id}, headers=VIEWER
        )
        assert refused.status_code == 403
    assert state_of(client, ids["dead"]) == "dead"
    assert state_of(client, ids["delayed"]) == "delayed"
    page = client.get(f"/job?queue=mail&id={ids['delayed']}", headers=VIEWER).text
    assert 'data-action="promote"' not in page and 'data-action="remove"' not in page


def test_the_openapi_document_lists_both_actions(client: TestClient) -> None:
    document = client.get("/api/openapi.json").json()
    post = document["paths"]["/api/actions/{action}"]["post"]
    assert {"remove", "promote"} <= set(post["parameters"][0]["schema"]["enum"])
