"""Rate limits seen by running workers: queue settings through the Queue API, the
concurrency cap across workers, and handlers raising RateLimited."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from shigoto import App, ConfigurationError, JobContext, RateLimited
from shigoto.testing import running_worker

from ._support import FAST


@pytest.fixture(autouse=True)
async def _needs_rate_limits(app: App) -> None:
    backend = await app.backend()
    if not backend.capabilities.rate_limits:
        pytest.skip(f"{backend.capabilities.name} declares no rate limits")


async def test_limits_are_set_and_read_as_the_user_wrote_them(app: App) -> None:
    queue = app.queue("email")
    assert await queue.limits() == {
        "rate_limit": None,
        "max_active": None,
        "group_rate_limit": None,
        "held_until_ms": None,
    }
    await queue.set_limits(rate_limit="600/m", max_active=5, group_rate_limit="10/2s")
    assert await queue.limits() == {
        "rate_limit": "600/m",
        "max_active": 5,
        "group_rate_limit": "10/2s",
        "held_until_ms": None,
    }
    with pytest.raises(ConfigurationError, match="100/s"):
        await queue.set_limits(rate_limit="lots")
    await queue.set_limits()
    assert (await queue.limits())["rate_limit"] is None


async def test_max_active_caps_running_jobs_across_two_workers(app: App) -> None:
    running = 0
    peak = 0

    @app.job(queue="capped")
    async def slow(ctx: JobContext, n: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    await app.queue("capped").set_limits(max_active=2)
    jobs = [await slow.enqueue(n=n) for n in range(12)]
    async with (
        running_worker(app, ["capped"], concurrency=5, **FAST),
        running_worker(app, ["capped"], concurrency=5, **FAST),
    ):
        for job in jobs:
            await job.wait_until_finished(timeout=10)
    assert peak == 2


async def test_rate_limited_goes_back_without_spending_an_attempt_and_holds_the_queue(
    app: App,
) -> None:
    calls: list[tuple[str, float]] = []

    @app.job(queue="api", attempts=1)
    async def call_api(ctx: JobContext, name: str) -> str:
        calls.append((name, time.monotonic()))
        if name == "first" and len(calls) == 1:
            raise RateLimited(retry_after=0.4)
        return name

    first = await call_api.enqueue(name="first")
    async with running_worker(app, ["api"], concurrency=1, **FAST):
        while not calls:
            await asyncio.sleep(0.01)
        limited_at = calls[0][1]
        second = await call_api.enqueue(name="second")
        assert await first.wait_until_finished(timeout=5) == "first"
        assert await second.wait_until_finished(timeout=5) == "second"
    record = await app.queue("api").get_job(first.id)
    assert record is not None and record.record is not None
    assert record.record.attempts == 1  # the rate-limited run did not count
    # the hold kept the whole queue back, the other job included
    assert all(at - limited_at >= 0.35 for name, at in calls[1:]), calls


async def test_rate_limited_without_hold_lets_the_other_jobs_run(app: App) -> None:
    order: list[str] = []

    @app.job(queue="api2", attempts=1)
    async def call_api(ctx: JobContext, name: str) -> None:
        order.append(name)
        if name == "first" and order.count("first") == 1:
            raise RateLimited(retry_after=0.5, hold=False)

    first = await call_api.enqueue(name="first")
    second = await call_api.enqueue(name="second")
    async with running_worker(app, ["api2"], concurrency=1, **FAST):
        await first.wait_until_finished(timeout=5)
        await second.wait_until_finished(timeout=5)
    assert order == ["first", "second", "first"]


async def test_a_rate_limit_key_gives_each_job_its_group(app: App) -> None:
    @app.job(queue="tenants", rate_limit_key=lambda data: data["tenant"])
    async def sync_tenant(ctx: JobContext, tenant: str) -> None:
        pass

    job = await sync_tenant.enqueue(tenant="acme")
    explicit = await app.queue("tenants").add("sync_tenant", {"tenant": "x"}, group="other")
    assert (await app.queue("tenants").get_job(job.id)).record.group == "acme"  # type: ignore[union-attr]
    assert (await app.queue("tenants").get_job(explicit.id)).record.group == "other"  # type: ignore[union-attr]
    with pytest.raises(ConfigurationError, match="rate_limit_key"):
        await sync_tenant.enqueue(tenant="")


def test_stats_shows_the_limits_of_queues_that_have_some(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from shigoto.cli.main import cli

    url = f"sqlite:///{tmp_path / 'stats.db'}"
    app = App(url)
    app.queue("limited").set_limits_sync(rate_limit="100/s", max_active=5)
    app.queue("free").add_sync("noop", {})
    app.close_sync()

    table = CliRunner().invoke(cli, ["--url", url, "stats"])
    as_json = CliRunner().invoke(cli, ["--url", url, "stats", "--json"])

    assert table.exit_code == 0, table.output
    assert "limits" in table.output and "100/s" in table.output
    data = json.loads(as_json.output)
    assert data["limited"]["limits"]["rate_limit"] == "100/s"
    assert data["free"]["limits"] is None


async def test_on_a_backend_without_rate_limits_rate_limited_is_an_ordinary_retry(
    app: App,
) -> None:
    import msgspec

    backend = await app.backend()
    backend.capabilities = msgspec.structs.replace(backend.capabilities, rate_limits=False)
    calls = 0

    @app.job(queue="api3", attempts=3)
    async def call_api(ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RateLimited(retry_after=0.05)

    job = await call_api.enqueue()
    async with running_worker(app, ["api3"], concurrency=1, **FAST):
        await job.wait_until_finished(timeout=5)
    record = await app.queue("api3").get_job(job.id)
    assert record is not None and record.record is not None
    assert record.record.attempts == 2  # counted, as a Retry would be
    assert record.record.errors[0].message.startswith("rate limited")
    with pytest.raises(ConfigurationError, match="does not support rate limits"):
        await app.queue("api3").set_limits(max_active=1)
    assert (await app.queue("api3").limits())["max_active"] is None


def test_the_limits_command_sets_and_shows_a_queues_limits(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from shigoto.cli.main import cli

    url = f"sqlite:///{tmp_path / 'limits.db'}"
    runner = CliRunner()

    done = runner.invoke(
        cli, ["--url", url, "limits", "email", "--rate", "100/s", "--max-active", "5"]
    )
    assert done.exit_code == 0, done.output
    assert "100/s" in done.output
    shown = json.loads(runner.invoke(cli, ["--url", url, "limits", "--json"]).output)
    assert shown["email"]["rate_limit"] == "100/s" and shown["email"]["max_active"] == 5
    bad = runner.invoke(cli, ["--url", url, "limits", "email", "--rate", "fast"])
    assert bad.exit_code != 0 and "100/s" in bad.output
    cleared = runner.invoke(cli, ["--url", url, "limits", "email", "--clear", "--json"])
    assert json.loads(cleared.output)["email"]["rate_limit"] is None
    assert "no queue has limits" in runner.invoke(cli, ["--url", url, "limits"]).output
