"""The dashboard's HTTP surface without a browser: sign-in, roles, CSRF, escaping, the
JSON API and its OpenAPI document, mounting under a prefix, and the CLI refusing to
start without credentials."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():  # starlette suggests httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from shigoto import App, UnrecoverableError
from shigoto.dashboard import Credential, Role, create_app
from shigoto.testing import run_until_empty

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]
OP_TOKEN = "operator-token-" + "x" * 16
RO_TOKEN = "viewer-token-" + "y" * 16
XSS = "<script>alert(1)</script>"
USERS = [
    Credential("alice", Role.OPERATOR, password="correct horse"),
    Credential("bob", Role.VIEWER, password="read only please"),
    Credential("token:operator", Role.OPERATOR, token=OP_TOKEN),
    Credential("token:viewer", Role.VIEWER, token=RO_TOKEN),
]


def seed(url: str) -> dict[str, str]:
    """A queue with a waiting job carrying an XSS payload and a secret, and a dead job."""

    async def main() -> dict[str, str]:
        app = App(url)

        @app.job(queue="mail", attempts=1)
        async def broken(ctx: object) -> None:
            raise UnrecoverableError(f"bad {XSS}")

        try:
            queue = app.queue("mail")
            dead = await queue.add("broken", {})
            await run_until_empty(app, "mail", concurrency=1)
            xss = await queue.add(
                XSS, {"note": XSS, "password": "hunter2"}, allow_sensitive=["password"]
            )
            return {"xss": xss.id, "dead": dead.id}
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


def sign_in(client: TestClient, user: str, password: str, prefix: str = "") -> str:
    """Sign in through the form; returns the session's CSRF token (from the page)."""
    page = client.get(f"{prefix}/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert nonce is not None
    done = client.post(
        f"{prefix}/login",
        data={"csrf": nonce.group(1), "user": user, "password": password, "next": f"{prefix}/"},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    home = client.get(f"{prefix}/")
    token = re.search(r'<meta name="csrf-token" content="([^"]*)"', home.text)
    assert token is not None
    return token.group(1)


def test_every_page_and_api_requires_sign_in(client: TestClient) -> None:
    for path in ("/", "/queue?queue=mail", "/dead?queue=mail", "/schedules", "/workers"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")
    for path in ("/api/overview", "/api/queue?queue=mail", "/api/workers", "/api/audit"):
        assert client.get(path).status_code == 401
    assert client.get("/api/overview", headers={"Authorization": "Bearer nope"}).status_code == 401
    response = client.post("/api/actions/pause", json={"queue": "mail"})
    assert response.status_code == 401


def test_wrong_password_is_refused_and_right_one_signs_in(client: TestClient) -> None:
    page = client.get("/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert nonce is not None
    bad = client.post(
        "/login", data={"csrf": nonce.group(1), "user": "alice", "password": "wrong password"}
    )
    assert bad.status_code == 401
    assert "Wrong user name" in bad.text
    sign_in(client, "alice", "correct horse")
    me = client.get("/api/me").json()
    assert me == {"user": "alice", "role": "operator", "can_act": True}


def test_sign_in_form_without_its_nonce_is_refused(client: TestClient) -> None:
    client.get("/login")
    response = client.post(
        "/login", data={"csrf": "forged", "user": "alice", "password": "correct horse"}
    )
    assert response.status_code == 401
    assert client.get("/api/me").status_code == 401


def test_actions_without_the_csrf_token_are_refused(client: TestClient) -> None:
    csrf = sign_in(client, "alice", "correct horse")
    form = client.post(
        "/actions/pause", data={"queue": "mail", "next": "/"}, follow_redirects=False
    )
    assert form.status_code == 403
    forged = client.post(
        "/actions/pause", data={"queue": "mail", "csrf": "forged"}, follow_redirects=False
    )
    assert forged.status_code == 403
    api = client.post("/api/actions/pause", json={"queue": "mail"})
    assert api.status_code == 403
    assert client.get("/api/queue?queue=mail").json()["paused"] is False
    ok = client.post(
        "/actions/pause", data={"queue": "mail", "csrf": csrf, "next": "/"}, follow_redirects=False
    )
    assert ok.status_code == 303
    assert client.get("/api/queue?queue=mail").json()["paused"] is True
    ok = client.post("/api/actions/resume", json={"queue": "mail"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200
    assert client.get("/api/queue?queue=mail").json()["paused"] is False


def test_a_viewer_reads_but_cannot_act(client: TestClient, ids: dict[str, str]) -> None:
    csrf = sign_in(client, "bob", "read only please")
    page = client.get(f"/job?queue=mail&id={ids['dead']}")
    assert page.status_code == 200
    assert 'data-action="retry"' not in page.text  # no button for a viewer
    refused = client.post(
        "/api/actions/retry",
        json={"queue": "mail", "id": ids["dead"]},
        headers={"X-CSRF-Token": csrf},
    )
    assert refused.status_code == 403
    assert "read only" in refused.json()["error"]
    form = client.post(
        "/actions/redrive",
        data={"queue": "mail", "all": "1", "csrf": csrf},
        follow_redirects=False,
    )
    assert form.status_code == 403
    # a dry-run preview is allowed: it changes nothing
    preview = client.get("/dead/confirm?queue=mail&action=redrive&all=1")
    assert preview.status_code == 200
    assert "read only" in preview.text
    assert 'data-testid="confirm"' not in preview.text
    bearer = {"Authorization": f"Bearer {RO_TOKEN}"}
    response = client.post(
        "/api/actions/redrive", json={"queue": "mail", "all": True}, headers=bearer
    )
    assert response.status_code == 403
    assert client.get("/api/job?queue=mail&id=" + ids["dead"]).json()["state"] == "dead"


def test_operator_redrives_with_a_dry_run_first_and_the_user_is_recorded(
    client: TestClient, ids: dict[str, str]
) -> None:
    bearer = {"Authorization": f"Bearer {OP_TOKEN}"}
    preview = client.post(
        "/api/actions/redrive", json={"queue": "mail", "all": True, "dry_run": True}, headers=bearer
    ).json()
    assert preview["count"] == 1
    assert preview["ids"] == [ids["dead"]]
    assert client.get("/api/job?queue=mail&id=" + ids["dead"], headers=bearer).json()["state"] == (
        "dead"
    )
    done = client.post(
        "/api/actions/retry", json={"queue": "mail", "id": ids["dead"]}, headers=bearer
    )
    assert done.status_code == 200, done.text
    assert done.json()["ids"] == [ids["dead"]]
    job = client.get("/api/job?queue=mail&id=" + ids["dead"], headers=bearer).json()
    assert job["state"] == "waiting"
    notes = [e["message"] for e in job["attempt_errors"] if e["kind"] == "note"]
    assert notes and "token:operator (dashboard)" in notes[-1]
    audit = client.get("/api/audit", headers=bearer).json()["entries"]
    assert any(
        e["user"].startswith("token:operator") and e["action"].endswith("retry") for e in audit
    ), audit


def test_job_data_is_escaped_and_secrets_masked(client: TestClient, ids: dict[str, str]) -> None:
    sign_in(client, "alice", "correct horse")
    for path in (
        "/",
        "/queue?queue=mail",
        f"/job?queue=mail&id={ids['xss']}",
        "/dead?queue=mail",
        f"/queue?queue=mail&name={XSS}",
    ):
        page = client.get(path)
        assert page.status_code == 200
        assert XSS not in page.text, path
    job_page = client.get(f"/job?queue=mail&id={ids['xss']}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in job_page
    assert "hunter2" not in job_page
    dead_page = client.get("/dead?queue=mail").text
    assert "bad &lt;script&gt;" in dead_page
    data = client.get(f"/api/job?queue=mail&id={ids['xss']}").json()["data"]
    assert data == {"note": XSS, "password": "••••••"}
    csp = client.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_flash_messages_and_redirects_stay_on_site(client: TestClient) -> None:
    csrf = sign_in(client, "alice", "correct horse")
    response = client.post(
        "/actions/pause",
        data={"queue": "mail", "csrf": csrf, "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert response.headers["location"].startswith("/?msg=")
    page = client.get(f"/?msg={XSS}")
    assert XSS not in page.text


def test_queue_page_paginates_filters_and_finds_by_id(url: str, ids: dict[str, str]) -> None:
    async def more() -> None:
        app = App(url)
        try:
            await app.queue("bulk").add_bulk(
                [{"name": "a" if i % 2 else "b", "data": {"i": i}} for i in range(60)]
            )
            await app.queue("bulk").set_limits(rate_limit="100/s", max_active=5)
        finally:
            await app.close()

    asyncio.run(more())
    bearer = {"Authorization": f"Bearer {OP_TOKEN}"}
    with TestClient(create_app(App(url), users=USERS)) as client:
        first = client.get("/api/queue?queue=bulk&state=waiting", headers=bearer).json()
        assert first["counts"]["waiting"] == 60
        assert len(first["page"]["jobs"]) == 25 and first["page"]["more"]
        third = client.get("/api/queue?queue=bulk&state=waiting&page=3", headers=bearer).json()
        assert len(third["page"]["jobs"]) == 10 and not third["page"]["more"]
        named = client.get("/api/queue?queue=bulk&state=waiting&name=a", headers=bearer).json()
        assert {j["name"] for j in named["page"]["jobs"]} == {"a"}
        by_name = {row["name"]: row["waiting"] for row in first["by_name"]["rows"]}
        assert by_name == {"a": 30, "b": 30} and first["by_name"]["complete"]
        assert first["limits"]["rate_limit"] == "100/s" and first["limits"]["max_active"] == 5
        sign_in(client, "alice", "correct horse")
        found = client.get(f"/queue?queue=mail&id={ids['xss']}", follow_redirects=False)
        assert found.status_code == 303 and "/job?" in found.headers["location"]
        missing = client.get("/queue?queue=mail&id=nope")
        assert "No job" in missing.text
        page = client.get("/queue?queue=bulk").text
        assert 'data-name="a"' in page and "state=waiting&amp;name=a" in page
        assert "rate 100/s" in page and "at most 5 active" in page


def test_openapi_document_is_valid_json_and_lists_the_api(client: TestClient) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    doc = json.loads(response.text)
    assert doc["openapi"].startswith("3.")
    for path in ("/api/overview", "/api/queue", "/api/job", "/api/actions/{action}"):
        assert path in doc["paths"]
    for item in doc["paths"].values():
        for operation in item.values():
            assert "responses" in operation


def test_the_dashboard_mounts_under_a_prefix(url: str, ids: dict[str, str]) -> None:
    host = Starlette(routes=[Mount("/ops/jobs", app=App(url).dashboard(users=USERS))])
    with TestClient(host) as client:
        redirect = client.get("/ops/jobs/", follow_redirects=False)
        assert redirect.headers["location"].startswith("/ops/jobs/login")
        sign_in(client, "alice", "correct horse", prefix="/ops/jobs")
        page = client.get("/ops/jobs/")
        assert 'href="/ops/jobs/static/app.css"' in page.text
        assert 'href="/ops/jobs/queue?queue=mail"' in page.text
        assert client.get("/ops/jobs/static/app.js").status_code == 200


def test_no_credentials_means_no_dashboard(url: str) -> None:
    from shigoto.errors import ConfigurationError

    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHIGOTO_DASHBOARD_")}
    with pytest.MonkeyPatch.context() as mp:
        for key in set(os.environ) - set(clean):
            mp.delenv(key)
        with pytest.raises(ConfigurationError, match="needs credentials"):
            App(url).dashboard()
    proc = subprocess.run(
        [sys.executable, "-m", "shigoto.cli.main", "dashboard", "--url", url, "--port", "0"],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "needs credentials" in proc.stderr
    assert "--insecure-no-auth" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_insecure_no_auth_still_requires_csrf(url: str, ids: dict[str, str]) -> None:
    with TestClient(create_app(App(url), users=[], insecure_no_auth=True)) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert client.post("/api/actions/pause", json={"queue": "mail"}).status_code == 403
        token = re.search(r'<meta name="csrf-token" content="([^"]*)"', page.text)
        assert token is not None
        ok = client.post(
            "/api/actions/pause", json={"queue": "mail"}, headers={"X-CSRF-Token": token.group(1)}
        )
        assert ok.status_code == 200


def test_a_group_is_redriven_through_its_preview_page(
    client: TestClient, ids: dict[str, str]
) -> None:
    csrf = sign_in(client, "alice", "correct horse")
    groups = client.get("/api/dead-letters?queue=mail").json()["groups"]
    assert [g["count"] for g in groups] == [1]
    fingerprint = groups[0]["fingerprint"]
    preview = client.get(f"/dead/confirm?queue=mail&action=redrive&fingerprint={fingerprint}")
    assert 'data-testid="confirm"' in preview.text
    assert ids["dead"] in preview.text
    assert client.get(f"/api/job?queue=mail&id={ids['dead']}").json()["state"] == "dead"
    done = client.post(
        "/actions/redrive",
        data={
            "queue": "mail",
            "fingerprint": fingerprint,
            "csrf": csrf,
            "next": "/dead?queue=mail",
        },
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert "1+dead+job%28s%29+redriven" in done.headers["location"]
    assert client.get(f"/api/job?queue=mail&id={ids['dead']}").json()["state"] == "waiting"
    assert "alice" in client.get("/activity").text


def test_the_overview_shows_active_alerts(url: str, ids: dict[str, str]) -> None:
    from shigoto.alerts import Monitor

    app = App(url)
    app.alerts.configure("mail", backlog=1, for_s=0)

    async def evaluate() -> None:
        try:
            await Monitor(app).evaluate()
        finally:
            await app.close()

    asyncio.run(evaluate())
    with TestClient(create_app(app, users=USERS)) as client:
        bearer = {"Authorization": f"Bearer {OP_TOKEN}"}
        alerts = client.get("/api/overview", headers=bearer).json()["alerts"]
        assert [(a["queue"], a["rule"]) for a in alerts] == [("mail", "backlog")]
        assert alerts[0]["state"] in ("pending", "firing")
        sign_in(client, "alice", "correct horse")
        assert 'data-testid="alert"' in client.get("/").text


def test_a_tampered_expired_or_foreign_session_cookie_is_refused() -> None:
    import time

    from shigoto.dashboard.auth import Authenticator

    auth = Authenticator(USERS, secret="one secret")
    principal = auth.sign_in("alice", "correct horse", "")
    assert principal is not None and principal.csrf
    cookie = auth.session_cookie(principal)
    assert auth.from_cookie(cookie) == principal
    mac = cookie.split(".")[1]
    payload = auth.unsign(cookie)
    assert payload is not None
    forged_body = auth.sign(payload.replace("alice", "bob")).split(".")[0]
    assert auth.from_cookie(f"{forged_body}.{mac}") is None
    assert auth.from_cookie(cookie, now_s=time.time() + 13 * 3600) is None
    assert Authenticator(USERS, secret="another secret").from_cookie(cookie) is None
    assert auth.sign_in("alice", "wrong", "") is None
    assert auth.sign_in("", "", OP_TOKEN) is not None
