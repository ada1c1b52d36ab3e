"""The dead-letter queue and idempotency end to end: real workers, real backends.

Every dead reason is recorded with its errors; operators list, group, redrive and purge
through the Queue API; dedup keys hold under 50 concurrent producers; ``ctx.once``
keeps a retried job from repeating a side effect; and the brief's retry recipe
(examples/retry_recipe.py) behaves as documented.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest

from shigoto import (
    App,
    Backoff,
    FrozenClock,
    JobContext,
    JobState,
    SyncJobContext,
    UnrecoverableError,
)
from shigoto.backends.contract import Backend
from shigoto.testing import run_until_empty, running_worker, wait_for

from ._support import FAST

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
async def _needs_sections(app: App) -> None:
    backend = await app.backend()
    if not (hasattr(backend, "list_dead") and hasattr(backend, "once_claim")):
        pytest.skip(
            f"dead-letter / idempotency sections not implemented on {backend.capabilities.name} yet"
        )


async def dead_reasons(app: App, queue: str = "default") -> dict[str, str | None]:
    page = await app.queue(queue).dead_letters(limit=1000)
    return {letter.name: letter.reason for letter in page.items}


# -- every dead reason ---------------------------------------------------------------


async def test_every_dead_reason_is_recorded_with_the_errors(app: App) -> None:
    class BusinessError(Exception):
        pass

    @app.job(attempts=2, backoff=0)
    async def exhausts(ctx: JobContext) -> None:
        raise ValueError(f"attempt {ctx.attempt} failed")

    @app.job(attempts=5)
    async def unrecoverable(ctx: JobContext) -> None:
        raise UnrecoverableError("order 7 was cancelled")

    @app.job(attempts=5, should_retry=lambda error, n: not isinstance(error, BusinessError))
    async def declined(ctx: JobContext) -> None:
        raise BusinessError("card declined")

    @app.job(attempts=1, timeout=0.05)
    async def too_slow(ctx: JobContext) -> None:
        await asyncio.sleep(10)

    queue = app.queue()
    for name in ("exhausts", "unrecoverable", "declined", "too_slow", "nobody_handles_me"):
        await queue.add(name)
    # a job whose worker "died": claimed by hand with a lease that is already over
    stalled = await queue.add("stalls", max_stalls=0, priority=10)
    backend = await app.backend()
    await backend.claim("default", limit=1, worker_id="gone", lease_ms=1, now_ms=0)

    @app.job
    async def stalls(ctx: JobContext) -> None:  # registered after the claim: never runs
        raise AssertionError("a stalled job past max_stalls must not run again")

    async with running_worker(app, concurrency=4, **FAST):
        await wait_for(lambda: _dead_count(app, 6), timeout=10, message="six jobs dead")

    assert await dead_reasons(app) == {
        "exhausts": "retries_exhausted",
        "unrecoverable": "unrecoverable",
        "declined": "should_retry_declined",
        "too_slow": "timeout",
        "nobody_handles_me": "no_handler",
        "stalls": "stalled_too_often",
    }
    exhausted = await queue.dead_letters(name="exhausts")
    [letter] = exhausted.items
    record = (await queue.get_job(letter.id)).record  # type: ignore[union-attr]
    assert record is not None
    assert [(e.attempt, e.error_type, e.message) for e in record.errors] == [
        (1, "ValueError", "attempt 1 failed"),
        (2, "ValueError", "attempt 2 failed"),
    ]
    for error in record.errors:
        assert "exhausts" in error.traceback
        assert error.worker_id and error.started_ms is not None
        assert error.ended_ms >= error.started_ms
    assert record.data == {}  # the payload is kept
    stalled_record = await stalled.refresh()
    assert stalled_record.errors[-1].error_type == "Stalled"


async def _dead_count(app: App, n: int) -> bool:
    return (await app.queue().counts())["dead"] >= n


# -- listing, grouping, redrive and purge through the Queue API ------------------------


@pytest.fixture
async def failed(app: App) -> AsyncIterator[App]:
    """Twelve dead jobs: 6 of 'user N not found' (two job names), 4 of a refused
    connection, 2 of a business error."""

    @app.job(attempts=1)
    async def sync_user(ctx: JobContext, user_id: int) -> None:
        raise LookupError(f"user {user_id} not found in 'crm-{user_id}'")

    @app.job(attempts=1)
    async def mail_user(ctx: JobContext, user_id: int) -> None:
        raise LookupError(f"user {user_id} not found in 'crm-{user_id}'")

    @app.job(attempts=1)
    async def call_api(ctx: JobContext, port: int) -> None:
        raise ConnectionRefusedError(111, f"connect to 10.0.0.{port}:{8000 + port} refused")

    @app.job(attempts=1)
    async def bill(ctx: JobContext) -> None:
        raise UnrecoverableError("card declined")

    for n in range(4):
        await sync_user.enqueue(user_id=n)
    for n in range(2):
        await mail_user.enqueue(user_id=100 + n)
    for n in range(4):
        await call_api.enqueue(port=n)
    for _ in range(2):
        await bill.enqueue()
    await run_until_empty(app, concurrency=4, **FAST)
    assert (await app.queue().counts())["dead"] == 12
    yield app


async def test_dead_letters_filter_and_paginate(failed: App) -> None:
    queue = failed.queue()

    assert len((await queue.dead_letters(limit=100)).items) == 12
    assert {d.name for d in (await queue.dead_letters(name="bill")).items} == {"bill"}
    assert len((await queue.dead_letters(reason="unrecoverable")).items) == 2
    assert len((await queue.dead_letters(error_type="ConnectionRefusedError")).items) == 4
    assert len((await queue.dead_letters(name=["bill", "call_api"])).items) == 6
    assert (await queue.dead_letters(since=timedelta(hours=1))).items
    assert not (await queue.dead_letters(until=timedelta(hours=1))).items

    seen: list[str] = []
    cursor = None
    while True:
        page = await queue.dead_letters(cursor=cursor, limit=5)
        seen += [d.id for d in page.items]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert len(seen) == len(set(seen)) == 12
    finished = [d.finished_ms for d in (await queue.dead_letters(limit=100)).items]
    assert finished == sorted(finished, reverse=True)


async def test_groups_gather_one_cause_across_ids_numbers_and_job_names(failed: App) -> None:
    report = await failed.queue().dead_letter_groups()

    assert (report.total_dead, report.scanned, report.complete) == (12, 12, True)
    by_type = {g.error_type: g for g in report.groups}
    # the handlers differ, so user-not-found splits by handler frame, not by user id
    assert sorted(g.count for g in report.groups) == [2, 2, 4, 4]
    refused = by_type["ConnectionRefusedError"]
    assert refused.count == 4
    assert refused.message == "[Errno <n>] connect to <n>:<n> refused"
    assert refused.frame.endswith("test_dlq_and_once.py:call_api")
    assert refused.job_names == ["call_api"]
    assert refused.reasons == {"retries_exhausted": 4}
    assert len(refused.sample_ids) == 3
    assert "ConnectionRefusedError" in refused.sample_traceback
    assert refused.first_seen_ms <= refused.last_seen_ms
    lookups = [g for g in report.groups if g.error_type == "LookupError"]
    assert {g.message for g in lookups} == {"user <n> not found in '<str>'"}
    assert {tuple(g.job_names) for g in lookups} == {("sync_user",), ("mail_user",)}
    assert report.groups[0].count >= report.groups[-1].count

    limited = await failed.queue().dead_letter_groups(scan_limit=5)
    assert (limited.scanned, limited.complete) == (5, False)
    assert sum(g.count for g in limited.groups) == 5


async def test_a_group_is_redriven_by_its_fingerprint_with_a_dry_run_first(failed: App) -> None:
    queue = failed.queue()
    report = await queue.dead_letter_groups()
    refused = next(g for g in report.groups if g.error_type == "ConnectionRefusedError")

    would = await queue.redrive(fingerprint=refused.fingerprint[:6], dry_run=True)
    assert len(would) == 4
    assert (await queue.counts())["dead"] == 12  # a dry run moves nothing

    moved = await queue.redrive(fingerprint=refused.fingerprint, actor="alice@ops-1")
    assert sorted(moved) == sorted(would)
    counts = await queue.counts()
    assert (counts["dead"], counts["waiting"]) == (8, 4)
    job = await queue.get_job(moved[0])
    assert job is not None and job.record is not None
    record = job.record
    assert record.attempts == 0
    assert [e.error_type for e in record.errors] == ["ConnectionRefusedError", "Redriven"]
    assert record.errors[-1].message.startswith("Redriven by alice@ops-1 (fingerprint=")
    assert record.errors[-1].worker_id == "alice@ops-1"


async def test_redrive_one_a_filter_and_all(failed: App) -> None:
    queue = failed.queue()
    one = (await queue.dead_letters(name="bill", limit=1)).items[0].id

    assert await queue.redrive([one]) == [one]
    assert await queue.redrive([one]) == []  # no longer dead
    assert len(await queue.redrive(name="mail_user", reason="retries_exhausted")) == 2
    assert len(await queue.redrive(all=True, dry_run=True)) == 9
    assert len(await queue.redrive(all=True)) == 9
    assert (await queue.counts())["dead"] == 0
    assert "Redriven by" in ((await queue.get_job(one)).record.errors[-1].message)  # type: ignore[union-attr]


async def test_redrive_requires_one_way_of_choosing(failed: App) -> None:
    from shigoto import ConfigurationError

    queue = failed.queue()
    with pytest.raises(ConfigurationError, match="exactly one way"):
        await queue.redrive()
    with pytest.raises(ConfigurationError, match="exactly one way"):
        await queue.redrive(["x"], name="bill")
    with pytest.raises(ConfigurationError, match="unknown dead reason"):
        await queue.redrive(reason="tired")
    with pytest.raises(ConfigurationError, match="rate"):
        await queue.redrive(all=True, rate="fast")


async def test_a_rate_limited_redrive_staggers_due_times(failed: App) -> None:
    queue = failed.queue()
    before = failed.clock.now_ms()

    moved = await queue.redrive(all=True, rate="4/s")

    assert len(moved) == 12
    records = [(await queue.get_job(i)).record for i in moved]  # type: ignore[union-attr]
    ready = sorted(r.ready_ms for r in records if r is not None)
    # 4 per second: the first batch now, the twelfth job about 2.75 s later
    assert ready[0] - before < 1_000
    assert 2_500 <= ready[-1] - before <= 3_500
    counts = await queue.counts()
    assert counts["delayed"] >= 8 and counts["dead"] == 0


async def test_purge_by_age_with_a_dry_run(backend_url: str) -> None:
    clock = FrozenClock()
    app = App(backend_url, clock=clock)
    try:
        backend = await app.backend()
        queue = app.queue("old")
        for n in range(3):
            await _kill_at(app, backend, "old", f"old{n}", clock)
        clock.advance(40 * 86400)
        await _kill_at(app, backend, "old", "recent", clock)

        would = await queue.purge(older_than=timedelta(days=30), dry_run=True)
        assert sorted(would) == ["old0", "old1", "old2"]
        assert (await queue.counts())["dead"] == 4

        assert sorted(await queue.purge(older_than=30 * 86400)) == ["old0", "old1", "old2"]
        assert [d.id for d in (await queue.dead_letters()).items] == ["recent"]
        assert await queue.purge(["recent", "missing"]) == ["recent"]
    finally:
        await app.close()


async def _kill_at(app: App, backend: Backend, queue: str, job_id: str, clock: FrozenClock) -> None:
    await app.queue(queue).add("task", job_id=job_id)
    [claimed] = await backend.claim(
        queue, limit=1, worker_id="w", lease_ms=1_000, now_ms=clock.now_ms()
    )
    from shigoto.backends.contract import Lease

    await backend.dead_letter(
        Lease(queue, job_id, claimed.token),
        reason="unrecoverable",
        error=None,
        now_ms=clock.now_ms(),
    )


# -- enqueue-side dedup ----------------------------------------------------------------


async def test_fifty_concurrent_producers_of_one_dedup_key_make_one_job(backend_url: str) -> None:
    apps = [App(backend_url) for _ in range(5)]
    try:
        jobs = await asyncio.gather(
            *(
                apps[n % 5].queue("mail").add("send_welcome", {"user_id": 1}, dedup_key="welcome:1")
                for n in range(50)
            )
        )
    finally:
        for app in apps:
            await app.close()

    created = [job for job in jobs if job.created]
    assert len(created) == 1
    assert {job.id for job in jobs} == {created[0].id}


async def test_a_dedup_key_is_free_again_after_the_job_ran_unless_a_ttl_holds_it(
    app: App,
) -> None:
    ran: list[int] = []

    @app.job
    async def send_welcome(ctx: JobContext, user_id: int) -> None:
        ran.append(user_id)

    first = await send_welcome.enqueue(user_id=1, dedup_key="welcome:1")
    again = await send_welcome.enqueue(user_id=1, dedup_key="welcome:1")
    held = await send_welcome.enqueue(user_id=2, dedup_key="welcome:2", dedup_ttl=3600)
    assert (again.id, again.created) == (first.id, False)
    await run_until_empty(app, **FAST)

    after_run = await send_welcome.enqueue(user_id=1, dedup_key="welcome:1")
    within_ttl = await send_welcome.enqueue(user_id=2, dedup_key="welcome:2", dedup_ttl=3600)

    assert after_run.created and after_run.id != first.id
    assert (within_ttl.id, within_ttl.created) == (held.id, False)
    assert ran == [1, 2]


async def test_bulk_adds_honour_dedup_keys(app: App) -> None:
    jobs = await app.queue("sync").add_bulk(
        [{"name": "sync_account", "data": {"n": n}, "dedup_key": "acct:acme"} for n in range(3)]
        + [{"name": "sync_account", "data": {"n": 9}, "dedup_key": "acct:other"}]
    )

    assert [job.created for job in jobs] == [True, False, False, True]
    assert len({jobs[0].id, jobs[1].id, jobs[2].id}) == 1
    assert (await app.queue("sync").counts())["waiting"] == 2


async def test_dedup_options_are_validated(app: App) -> None:
    from shigoto import ConfigurationError

    with pytest.raises(ConfigurationError, match="dedup_key"):
        await app.queue().add("x", dedup_key="")
    with pytest.raises(ConfigurationError, match="dedup_ttl needs a dedup_key"):
        await app.queue().add("x", dedup_ttl=5)
    with pytest.raises(ConfigurationError, match="dedup_ttl"):
        await app.queue().add("x", dedup_key="k", dedup_ttl=-1)


# -- ctx.once ---------------------------------------------------------------------------


async def test_a_retry_does_not_repeat_an_effect_that_succeeded(app: App) -> None:
    sent: list[int] = []

    async def send_mail(user_id: int) -> str:
        sent.append(user_id)
        return f"msg-{user_id}"

    @app.job(attempts=3, backoff=0)
    async def welcome(ctx: JobContext, user_id: int) -> str:
        message_id: str = await ctx.once(f"welcome-mail:{user_id}", send_mail, user_id)
        if ctx.attempt == 1:
            raise ConnectionError("crashed after sending, before finishing")
        return message_id

    job = await welcome.enqueue(user_id=42)
    await run_until_empty(app, **FAST)

    assert await job.wait_until_finished(timeout=5) == "msg-42"  # the recorded result
    assert sent == [42]
    record = await job.refresh()
    assert record.attempts == 2


async def test_an_effect_that_raised_is_done_again_by_the_retry(app: App) -> None:
    calls: list[int] = []

    def flaky_send() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("smtp timed out")

    @app.job(attempts=3, backoff=0)
    async def notify(ctx: JobContext) -> None:
        await ctx.once("notify", flaky_send)

    job = await notify.enqueue()
    await run_until_empty(app, **FAST)

    assert await job.wait_until_finished(timeout=5) is None
    assert len(calls) == 2


async def test_a_def_handler_uses_the_blocking_once(app: App) -> None:
    sent: list[str] = []

    @app.job(attempts=2, backoff=0)
    def report(ctx: SyncJobContext) -> int:
        count = ctx.once("report-mail", lambda: sent.append(threading.current_thread().name))
        if ctx.attempt == 1:
            raise RuntimeError("crash after the mail")
        return len(sent) if count is None else -1

    job = await report.enqueue()
    await run_until_empty(app, **FAST)

    assert await job.wait_until_finished(timeout=5) == 1
    assert sent[0].startswith("shigoto-job")


async def test_a_worker_killed_after_the_effect_does_not_repeat_it_on_recovery(
    app: App,
) -> None:
    """The job's first worker records the effect, then "dies" (its lease expires while
    the handler hangs); the recovered job runs on another worker and skips the effect."""
    sent: list[int] = []
    hang = asyncio.Event()

    async def charge() -> str:
        sent.append(1)
        return "ch_1"

    @app.job(attempts=3, max_stalls=2)
    async def pay(ctx: JobContext) -> str:
        charge_id: str = await ctx.once("charge:order-1", charge)
        if ctx.attempt == 1 and not hang.is_set():
            hang.set()
            await asyncio.sleep(3600)  # the lease will be lost here
        return charge_id

    job = await pay.enqueue()
    # worker 1 stops heartbeating (heartbeat far beyond its lease): its job stalls
    slow_beats = {**FAST, "heartbeat_s": 0.9, "shutdown_grace_s": 0.1}
    async with running_worker(app, concurrency=1, **slow_beats) as w1:
        await wait_for(hang.is_set, timeout=5, message="first attempt hangs")
        w1._heartbeat.stop()
        async with running_worker(app, concurrency=1, **FAST):
            assert await job.wait_until_finished(timeout=10) == "ch_1"

    assert sent == [1]
    assert (await job.refresh()).stalls == 1


async def test_two_jobs_with_one_once_key_do_the_effect_once(app: App) -> None:
    sent: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def send(job_id: str) -> str:
        sent.append(job_id)
        started.set()
        await release.wait()
        return job_id

    @app.job
    async def welcome(ctx: JobContext) -> str:
        result: str = await ctx.once("welcome:user-1", send, ctx.job_id)
        return result

    first = await welcome.enqueue()
    second = await welcome.enqueue()
    async with running_worker(app, concurrency=2, **FAST):
        await wait_for(started.is_set, timeout=5, message="the first send started")
        await asyncio.sleep(0.2)  # the second job is waiting on the claim now
        release.set()
        results = [
            await first.wait_until_finished(timeout=5),
            await second.wait_until_finished(timeout=5),
        ]

    assert len(sent) == 1
    assert results == [sent[0], sent[0]]


# -- the brief's retry recipe ------------------------------------------------------------


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_the_retry_recipe_retries_refusals_up_to_ten_times_and_dead_letters_business_errors(
    app: App,
) -> None:
    recipe = load_example("retry_recipe")
    gateway = recipe.FakeGateway(refusals={1: 6, 2: 100})
    charge = recipe.register(app, gateway, backoff=Backoff.fixed(0.01))

    recovers = await charge.enqueue(order_id=1, amount=500)  # 6 refusals, then a charge
    never = await charge.enqueue(order_id=2, amount=500)  # refused forever
    declined = await charge.enqueue(order_id=3, amount=0)  # a business error
    await run_until_empty(app, "payments", **FAST)

    assert await recovers.wait_until_finished(timeout=5) == "ch_order-1"
    assert (await recovers.refresh()).attempts == 7  # more than the default 3 attempts
    never_record = await never.refresh()
    assert (never_record.state, never_record.attempts) == (JobState.DEAD, 10)
    assert never_record.reason == "should_retry_declined"
    declined_record = await declined.refresh()
    assert (declined_record.state, declined_record.attempts) == (JobState.DEAD, 1)
    assert declined_record.reason == "should_retry_declined"
    assert declined_record.last_error is not None
    assert declined_record.last_error.error_type.endswith("BusinessError")
    assert len(gateway.charges) == 1
    report = await app.queue("payments").dead_letter_groups()
    assert {g.error_type.rsplit(".", 1)[-1] for g in report.groups} == {
        "ConnectionRefusedError",
        "BusinessError",
    }
