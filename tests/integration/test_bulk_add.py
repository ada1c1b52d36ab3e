"""``add_bulk``: items of a name and data only take a shorter path than items with
options (``shigoto.bulk_add``); both store the same jobs and say which item is
wrong. A chunk's audit entries follow its store without holding up the next chunk."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shigoto import App, JobContext
from shigoto.backends.contract import AuditEntry
from shigoto.errors import ConfigurationError, PayloadError


async def stored(app: App, queue: str, job_id: str) -> Any:
    job = await app.queue(queue).get_job(job_id)
    assert job is not None and job.record is not None
    return job.record


async def test_plain_items_store_what_items_with_options_store(app: App) -> None:
    @app.job(queue="bulk", attempts=7, rate_limit_key=lambda data: data["tenant"])
    async def sync(ctx: JobContext, tenant: str) -> None:
        pass

    app.queue("bulk").defaults["priority"] = 3
    with app.actor("alice"):
        plain, general = await app.queue("bulk").add_bulk(
            [
                {"name": "sync", "data": {"tenant": "acme"}},
                {"name": "sync", "data": {"tenant": "acme"}, "delay": None},  # an option
            ]
        )

    one, other = await stored(app, "bulk", plain.id), await stored(app, "bulk", general.id)
    assert one.options == other.options
    assert (one.options.attempts, one.options.priority, one.options.actor) == (7, 3, "alice")
    assert one.group == other.group == "acme"
    assert (one.payload, one.state) == (other.payload, other.state)


async def test_a_plain_item_that_is_wrong_is_named_by_its_index(app: App) -> None:
    @app.job(queue="bulk", rate_limit_key=lambda data: data.get("tenant", ""))
    async def sync(ctx: JobContext, tenant: str = "") -> None:
        pass

    items: list[dict[str, Any]] = [{"name": "sync", "data": {"tenant": "a"}}] * 3
    with pytest.raises(ConfigurationError, match=r"add_bulk item 2: job .sync.: rate_limit_key"):
        await app.queue("bulk").add_bulk([*items[:2], {"name": "sync", "data": {}}])
    with pytest.raises(PayloadError, match="data must be a mapping"):
        await app.queue("bulk").add_bulk([*items, {"name": "sync", "data": [1]}])
    with pytest.raises(ConfigurationError, match="add_bulk item 1: job name must be"):
        await app.queue("bulk").add_bulk([items[0], {"name": ""}])


async def test_a_slow_audit_append_does_not_hold_up_the_next_chunks(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await app.backend()
    store, append = backend.enqueue, backend.audit_append
    chunks_stored = 0
    all_stored = asyncio.Event()
    appended: list[AuditEntry] = []

    async def enqueue(jobs: Any, now_ms: int) -> Any:
        nonlocal chunks_stored
        done = await store(jobs, now_ms)
        chunks_stored += 1
        if chunks_stored == 5:
            all_stored.set()
        return done

    async def audit_append(entries: Any) -> None:
        await all_stored.wait()  # only once every chunk is stored
        appended.extend(entries)
        await append(entries)

    monkeypatch.setattr(backend, "enqueue", enqueue)
    monkeypatch.setattr(backend, "audit_append", audit_append)

    async with asyncio.timeout(20):
        jobs = await app.queue("bulk").add_bulk({"name": "task"} for _ in range(4500))

    assert [entry.job_id for entry in appended] == [job.id for job in jobs]


async def test_an_audit_append_that_fails_fails_the_add_once_every_chunk_is_stored(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await app.backend()
    append = backend.audit_append
    calls = 0

    async def audit_append(entries: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the audit trail is unreachable")
        await append(entries)

    monkeypatch.setattr(backend, "audit_append", audit_append)

    with pytest.raises(ConnectionError, match="unreachable"):
        await app.queue("bulk").add_bulk({"name": "task"} for _ in range(2500))

    assert (await app.queue("bulk").counts())["waiting"] == 2500
    later = await app.audit.query(action="enqueue", queue="bulk", limit=2000)
    assert len(later) == 1500  # the chunks after the failed one still have their entries
