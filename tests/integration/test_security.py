"""Security end to end, on every backend: encrypted fields at rest, the actor that
travels with a job, the audit trail of what happened, and payloads that try to be code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shigoto import App, JobState
from shigoto.context import JobContext
from shigoto.errors import ConfigurationError, JobFailed
from shigoto.security import KeyRing, generate_key
from shigoto.security.encryption import SHOWN, redact
from shigoto.security.rotation import rotate_keys

from ._support import FAST

SECRET_EMAIL = "alice.secret@example.com"
SECRET_STREET = "1-2-3 Hidden Street"


async def drain(app: App, queue: str = "default") -> None:
    await app.worker([queue], 4, burst=True, **FAST).run()


async def test_encrypted_fields_reach_the_handler_in_plaintext_and_are_stored_sealed(
    app: App, backend_url: str, tmp_path: Path
) -> None:
    app.security.keys = KeyRing.parse(generate_key())
    seen: list[dict[str, Any]] = []

    @app.job(encrypt=["email", "address.street"])
    async def welcome(ctx: JobContext, user_id: int, email: str, address: dict[str, Any]) -> None:
        seen.append({"user_id": user_id, "email": email, "address": address})

    job = await welcome.enqueue(
        user_id=7, email=SECRET_EMAIL, address={"street": SECRET_STREET, "city": "Tokyo"}
    )
    record = await job.refresh()
    assert SECRET_EMAIL.encode() not in record.payload
    assert SECRET_STREET.encode() not in record.payload
    shown = redact(record.data)
    assert shown == {"user_id": 7, "email": SHOWN, "address": {"street": SHOWN, "city": "Tokyo"}}

    await drain(app)

    assert await job.state() is JobState.COMPLETED
    assert seen == [
        {"user_id": 7, "email": SECRET_EMAIL, "address": {"street": SECRET_STREET, "city": "Tokyo"}}
    ]
    if backend_url.startswith("sqlite"):
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("*.db*"))
        assert b"Tokyo" in raw  # the file does hold the job...
        assert SECRET_EMAIL.encode() not in raw  # ...but not the encrypted fields
        assert SECRET_STREET.encode() not in raw


async def test_per_enqueue_encryption_satisfies_the_guard(app: App) -> None:
    app.security.keys = KeyRing.parse(generate_key())
    got: list[str] = []

    @app.job
    async def connect(ctx: JobContext, api_key: str) -> None:
        got.append(api_key)

    await connect.enqueue(api_key="sk-123", encrypt=["api_key"])
    await connect.with_options(encrypt=["api_key"]).enqueue(api_key="sk-456")
    await drain(app)
    assert sorted(got) == ["sk-123", "sk-456"]


async def test_a_missing_or_wrong_key_sends_the_job_to_the_dlq_with_the_reason(
    app: App,
) -> None:
    app.security.keys = KeyRing.parse(generate_key())
    ran: list[str] = []

    @app.job(encrypt=["email"], attempts=5)
    async def mail(ctx: JobContext, email: str) -> None:
        ran.append(email)

    wrong = await mail.enqueue(email=SECRET_EMAIL)
    app.security.keys = KeyRing.parse(generate_key())  # the old key is gone
    await app.worker(["default"], 1, burst=True, **FAST).run()

    with pytest.raises(JobFailed) as failed:
        await wrong.wait_until_finished(timeout=5)
    assert failed.value.reason == "decryption_failed"
    record = await wrong.refresh()
    assert record.attempts == 1  # not retried: no retry can bring a key back
    assert record.last_error is not None and "is not configured" in record.last_error.message

    app.security.keys = KeyRing.parse(generate_key())
    missing = await mail.enqueue(email=SECRET_EMAIL)
    app.security.keys = KeyRing([])  # a worker started without SHIGOTO_ENCRYPTION_KEYS
    await app.worker(["default"], 1, burst=True, **FAST).run()
    record = await missing.refresh()
    assert (record.state, record.reason) == (JobState.DEAD, "decryption_failed")
    assert record.last_error is not None
    assert "SHIGOTO_ENCRYPTION_KEYS is not set" in record.last_error.message
    assert ran == []

    with pytest.raises(ConfigurationError, match="SHIGOTO_ENCRYPTION_KEYS"):
        await mail.enqueue(email="x@example.com")  # a producer without a key is told at once


async def test_keys_rotate_reencrypts_stored_jobs_under_the_newest_key(app: App) -> None:
    old, new = generate_key(), generate_key()
    app.security.keys = KeyRing.parse(old)

    @app.job(encrypt=["email"])
    async def mail(ctx: JobContext, email: str) -> str:
        return email

    jobs = [await mail.enqueue(email=f"u{n}@example.com") for n in range(3)]
    app.security.keys = KeyRing.parse(f"{new},{old}")

    report = await rotate_keys(app)

    assert (report.rotated, report.failed) == (3, [])
    assert (await rotate_keys(app)).current == 3
    app.security.keys = KeyRing.parse(new)  # the old key can now be dropped
    await drain(app)
    assert [await j.wait_until_finished(timeout=5) for j in jobs] == [
        f"u{n}@example.com" for n in range(3)
    ]
    second, first = await app.audit.query(action="keys.rotate")  # newest first
    assert first.details is not None and b'"rotated":3' in first.details
    assert second.details is not None and b'"rotated":0' in second.details


async def test_the_enqueuing_actor_travels_with_the_job(app: App) -> None:
    actors: list[str | None] = []

    @app.job
    async def report(ctx: JobContext, report_id: int) -> None:
        actors.append(ctx.actor)

    @app.job
    def sync_report(ctx: Any, report_id: int) -> None:
        actors.append(ctx.actor)

    with app.actor("alice"):
        await report.enqueue(report_id=1)
        await sync_report.enqueue(report_id=2)
    await report.enqueue(report_id=3)
    await app.worker(["default"], 1, burst=True, **FAST).run()

    assert actors[:2] == ["alice", "alice"]
    assert actors[2] is not None and "@" in actors[2]  # user@host of this process


async def test_jobs_a_handler_enqueues_carry_the_original_actor(app: App) -> None:
    actors: list[str | None] = []

    @app.job
    async def child(ctx: JobContext) -> None:
        actors.append(ctx.actor)

    @app.job
    async def parent(ctx: JobContext) -> None:
        await child.enqueue()

    with app.actor("alice"):
        await parent.enqueue()
    await drain(app)
    assert actors == ["alice"]


async def test_the_audit_trail_records_who_did_what(app: App) -> None:
    @app.job
    async def work(ctx: JobContext, n: int) -> None:
        if n == 2:
            raise ValueError("no")

    queue = app.queue("default")
    with app.actor("alice"):
        one = await work.enqueue(n=1)
        two = await work.with_options(attempts=1).enqueue(n=2)
        three = await work.enqueue(n=3, delay=3600)
    with app.actor("bob"):
        await queue.cancel(three.id)
        await queue.pause()
        await queue.resume()
    await drain(app)
    with app.actor("carol"):
        assert await queue.redrive([two.id]) == [two.id]
        await drain(app)
        assert await queue.purge([two.id]) == [two.id]
        await app.schedule("nightly", "work", cron="0 2 * * *", data={"n": 1})
        await app.unschedule("nightly")

    history = [(e.actor, e.action) for e in reversed(await app.audit.query(job_id=one.id))]
    assert history[0] == ("alice", "enqueue")
    assert [a for _, a in history[1:]] == ["job.start", "job.end"]
    assert all(actor.startswith("worker:") for actor, _ in history[1:])

    two_actions = [e.action for e in reversed(await app.audit.query(job_id=two.id))]
    assert two_actions == [
        "enqueue",
        "job.start",
        "job.end",
        "redrive",
        "job.start",
        "job.end",
        "purge",
    ]
    ends = await app.audit.query(job_id=two.id, action="job.end")
    assert all(e.details and b'"outcome":"dead"' in e.details for e in ends)

    assert [e.action for e in reversed(await app.audit.query(actor="bob"))] == [
        "cancel",
        "pause",
        "resume",
    ]
    carol = [e.action for e in reversed(await app.audit.query(actor="carol"))]
    assert carol == ["redrive", "purge", "schedule.save", "schedule.delete"]


async def test_a_completion_whose_lease_was_lost_is_recorded_as_such_not_as_completed(
    app: App,
) -> None:
    """``job.end`` entries are made once a completion is written: one the backend refused
    (the job was recovered elsewhere meanwhile) says ``lease_lost``."""

    runs = 0

    @app.job
    async def slow(ctx: JobContext) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:  # as if its lease had expired: recovered while its handler runs
            backend = await app.backend()
            await backend.recover_stalled("default", now_ms=app.clock.now_ms() + 10**9, limit=1)

    job = await slow.enqueue()
    await app.worker(["default"], 1, burst=True, **FAST).run()

    ends = await app.audit.query(job_id=job.id, action="job.end")
    outcomes = [msgspec.json.decode(e.details or b"")["outcome"] for e in reversed(ends)]
    assert outcomes == ["lease_lost", "completed"]


@pytest.mark.parametrize(
    "payload",
    [
        {"blob": pickle.dumps(object).hex(), "raw": "cos\nsystem\n(S'touch /tmp/pwn'\ntR."},
        {"name": "__import__('os').system('touch /tmp/pwn')"},
        {"expr": "eval(compile('open(\"/tmp/pwn\",\"w\")','x','exec'))"},
        {"__class__": "os.system", "__reduce__": ["os.system", ["touch /tmp/pwn"]]},
        {"module": "os", "callable": "system", "args": ["touch /tmp/pwn"]},
        {"$shigoto:encrypted": "v1:deadbeef:AAAA"},  # a forged envelope
    ],
)
async def test_crafted_payloads_are_inert_data(
    app: App, payload: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pickle, eval or import of names from job data: the handler receives exactly
    the strings it was sent, and nothing runs."""
    import builtins
    import os

    calls: list[str] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(f"system{a}") or 0)
    real_import = builtins.__import__

    def watched_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in ("os", "subprocess", "posix"):
            frame = __import__("sys")._getframe(1)
            caller = str(frame.f_globals.get("__name__", ""))
            # Not payload-driven, and timed by test order or threads: a module body run
            # at its first import (a lazily imported shigoto module), and C extensions
            # called by storage plumbing (sqlite3 opening a connection on the
            # heartbeat's thread), which only moves the payload as bytes.
            loading = frame.f_code.co_name == "<module>"
            if caller.startswith("shigoto") and not (
                loading or caller.startswith("shigoto.backends.")
            ):
                calls.append(f"import {name} from {caller}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", watched_import)
    received: list[dict[str, Any]] = []

    @app.job
    async def echo(ctx: JobContext, **data: Any) -> None:
        received.append(data)

    job = await app.queue().add("echo", {"data": payload})
    await drain(app)

    assert calls == []
    assert not Path("/tmp/pwn").exists()
    if "$shigoto:encrypted" in payload:  # a forged envelope does not decrypt: dead, inert
        assert (await job.refresh()).reason == "decryption_failed"
        assert received == []
    else:
        assert received == [{"data": payload}]


async def test_a_scheduled_tick_s_job_is_in_the_audit_trail(app: App) -> None:
    @app.every(60)
    async def heartbeat(ctx: JobContext) -> None:
        return None

    now = app.clock.now_ms()
    scheduler = app.scheduler(handle_signals=False)
    await scheduler.tick(now)  # registers the schedule
    fired = await scheduler.tick(now + 61_000)
    assert len(fired) == 1
    [entry] = await app.audit.query(job_id=fired[0].job_id)
    assert entry.action == "enqueue"
    assert entry.details is not None and b'"schedule":"heartbeat"' in entry.details
