"""The dashboard in a real browser: headless Chromium driven by Playwright.

The dashboard runs as ``shigoto dashboard`` and a worker as ``shigoto worker``, both
subprocesses on a fresh SQLite file, as an operator would run them. One browser is
shared by the module. With ``SHIGOTO_SCREENSHOTS=docs/screenshots`` the tests also
save a screenshot of each page there (that is how the README's pictures are made).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("SHIGOTO_CHROMIUM", "/usr/bin/chromium")
if os.environ.get("SHIGOTO_REQUIRE_SERVERS") == "1" and not Path(CHROMIUM).exists():
    pytest.fail(f"no Chromium at {CHROMIUM} (SHIGOTO_REQUIRE_SERVERS=1)", pytrace=False)
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("starlette")

from shigoto import App  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "shigoto.cli.main"]
XSS = "<script>alert(1)</script>"
OPERATOR = ("alice", "correct horse battery")
VIEWER = ("bob", "read only please")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = os.environ.get("SHIGOTO_SCREENSHOTS")
TIMEOUT_MS = 15_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


class Site:
    """A running dashboard (and, on demand, a worker) over one SQLite file."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.url = f"sqlite:///{tmp / f'dash-{uuid.uuid4().hex[:8]}.db'}?poll=0.02"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHIGOTO_")}
        self.env.update(
            SHIGOTO_URL=self.url,
            SHIGOTO_DASHBOARD_USER=OPERATOR[0],
            SHIGOTO_DASHBOARD_PASSWORD=OPERATOR[1],
            SHIGOTO_DASHBOARD_READONLY_USER=VIEWER[0],
            SHIGOTO_DASHBOARD_READONLY_PASSWORD=VIEWER[1],
            PYTHONPATH=str(REPO),
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*CLI, *args],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"{args[0]}.log", "ab"),  # noqa: SIM115
        )
        self.procs.append(proc)
        return proc

    def start_dashboard(self) -> None:
        self.spawn("dashboard", "--port", str(self.port), "--poll", "0.3")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.base + "/api/openapi.json", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError((self.tmp / "dashboard.log").read_text())

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self.spawn("worker", "tests.e2e.dashboard_app:app", "--concurrency", "4")

    def run(self, coro_fn: Any) -> Any:
        """Run ``coro_fn(app)`` as a producer would, on a thread of its own (the sync
        Playwright API owns this thread's event loop)."""

        async def main() -> Any:
            app = App(self.url)
            try:
                return await coro_fn(app)
            finally:
                await app.close()

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, main()).result()

    def add(self, queue: str, *jobs: tuple[str, dict[str, Any]]) -> list[str]:
        async def main(app: App) -> list[str]:
            added = await app.queue(queue).add_bulk([{"name": n, "data": d} for n, d in jobs])
            return [job.id for job in added]

        return list(self.run(main))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    running = Site(tmp_path)
    running.start_dashboard()
    yield running
    running.stop()


def signed_in(browser: Any, site: Site, who: tuple[str, str]) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    alerts: list[str] = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.accept()))
    page.alerts = alerts
    page.goto(site.base + "/")
    assert "/login" in page.url
    if who == OPERATOR:
        shot(page, "login")
    page.fill("input[name=user]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button:has-text('Sign in')")
    page.wait_for_url(site.base + "/")
    playwright_api.expect(page.get_by_test_id("user")).to_have_text(who[0])
    return page


def count(page: Any, queue: str, state: str) -> Any:
    return page.locator(f"tr[data-queue='{queue}'] a[data-state='{state}']")


def test_operator_watches_a_queue_drain_live_then_redrives_a_dead_job(
    browser: Any, site: Site, tmp_path: Path
) -> None:
    expect = playwright_api.expect
    flag = tmp_path / "template.txt"
    site.add("mail", *[("send_mail", {"user_id": i}) for i in range(30)])
    [fixable] = site.add("mail", ("needs_file", {"path": str(flag)}))
    site.run(lambda app: app.schedule("digest", "send_mail", cron="0 9 * * *", tz="Asia/Tokyo"))
    page = signed_in(browser, site, OPERATOR)
    expect(count(page, "mail", "waiting")).to_have_text("31")
    page.evaluate("window.__notReloaded = true")

    worker = site.start_worker()
    expect(count(page, "mail", "completed")).to_have_text("30")
    expect(count(page, "mail", "waiting")).to_have_text("0")
    expect(count(page, "mail", "dead")).to_have_text("1")
    assert page.evaluate("window.__notReloaded") is True  # updated live, not reloaded
    # the chart (our own SVG) catches up once the worker has flushed its metrics
    expect(page.locator("figure.chart .chart-summary").first).to_contain_text("30 completed")
    expect(page.locator("figure.chart svg rect.ok")).not_to_have_count(0)
    shot(page, "overview")

    page.goto(site.base + "/queue?queue=mail&state=completed")
    expect(page.locator("table[data-testid=jobs] tbody tr")).to_have_count(25)
    shot(page, "queue")

    page.goto(site.base + "/dead?queue=mail")
    expect(page.locator("table[data-testid=groups]")).to_contain_text("template")
    shot(page, "dead-letters")
    page.click("table[data-testid=groups] a:has-text('Redrive…')")
    expect(page.get_by_test_id("preview")).to_contain_text("1")
    shot(page, "redrive-confirm")

    page.goto(site.base + f"/job?queue=mail&id={fixable}")
    expect(page.get_by_test_id("job-state")).to_have_text("dead")
    expect(page.locator("pre.tb").first).to_contain_text("UnrecoverableError")
    shot(page, "job-dead")
    flag.write_text("hello")  # the operator fixes the cause...
    page.click("button[data-action=retry]")  # ...and redrives (a confirm dialog, accepted)
    expect(page.get_by_test_id("flash")).to_contain_text("redriven")
    expect(page.get_by_test_id("job-state")).to_have_text("completed")
    expect(page.locator("ol.timeline")).to_contain_text("Redriven by alice (dashboard)")
    shot(page, "job-completed")
    assert page.alerts == ["Redrive this job?"]

    page.goto(site.base + "/schedules")
    expect(page.locator("main")).to_contain_text("digest")
    shot(page, "schedules")
    page.goto(site.base + "/workers")
    expect(page.locator("main table")).to_contain_text("mail")
    shot(page, "workers")
    page.goto(site.base + "/activity")
    expect(page.locator("main table")).to_contain_text("alice")
    shot(page, "activity")
    worker.terminate()
    page.context.close()


def test_xss_payload_renders_as_text(browser: Any, site: Site) -> None:
    expect = playwright_api.expect
    job_id = site.run(
        lambda app: app.queue("inbox").add(
            XSS, {"subject": XSS, "api_key": "sk-secret"}, allow_sensitive=["api_key"]
        )
    ).id
    page = signed_in(browser, site, OPERATOR)
    page.goto(site.base + "/queue?queue=inbox")
    expect(page.locator("table[data-testid=jobs]")).to_contain_text(XSS)
    page.goto(site.base + f"/job?queue=inbox&id={job_id}")
    expect(page.get_by_test_id("job-data")).to_contain_text(XSS)
    expect(page.get_by_test_id("job-data")).not_to_contain_text("sk-secret")
    page.wait_for_timeout(700)  # a live refresh or two
    assert page.alerts == []  # nothing ran
    assert page.locator("script:not([src])").count() == 0
    shot(page, "job-xss")
    page.context.close()


def test_a_read_only_user_cannot_redrive(browser: Any, site: Site, tmp_path: Path) -> None:
    expect = playwright_api.expect
    [dead] = site.add("mail", ("needs_file", {"path": str(tmp_path / "never")}))
    worker = site.start_worker()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = site.run(lambda app: app.queue("mail").get_job(dead))
        if job.record.state.value == "dead":
            break
        time.sleep(0.1)
    worker.terminate()
    page = signed_in(browser, site, VIEWER)
    expect(page.locator(".role")).to_have_text("viewer")
    expect(page.locator("button[data-action]")).to_have_count(0)  # no pause buttons
    page.goto(site.base + f"/job?queue=mail&id={dead}")
    expect(page.get_by_test_id("job-state")).to_have_text("dead")
    expect(page.locator("button[data-action=retry]")).to_have_count(0)
    page.goto(site.base + "/dead/confirm?queue=mail&action=redrive&all=1")
    expect(page.get_by_test_id("preview")).to_contain_text("1")
    expect(page.locator("main")).to_contain_text("read only")
    expect(page.get_by_test_id("confirm")).to_have_count(0)
    # Even a hand-made request with the page's CSRF token is refused by role.
    status = page.evaluate(
        """async (id) => {
            const csrf = document.querySelector("meta[name=csrf-token]").content;
            const r = await fetch("/api/actions/retry", {method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                body: JSON.stringify({queue: "mail", id})});
            return r.status;
        }""",
        dead,
    )
    assert status == 403
    page.goto(site.base + f"/job?queue=mail&id={dead}")
    expect(page.get_by_test_id("job-state")).to_have_text("dead")
    page.context.close()
