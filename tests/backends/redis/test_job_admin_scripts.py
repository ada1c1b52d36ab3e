"""``remove.lua`` and ``promote.lua`` called directly with the KEYS and ARGV their headers
document: replies, every key they must clean, and the wake-up marker."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from shigoto.backends.contract import Completion, Lease
from shigoto.backends.redis import RedisBackend
from shigoto.backends.redis.records import QueueKeys
from shigoto.backends.redis.scripts import SCRIPTS_DIR
from shigoto.job import JobState

from .test_scripts import T0, active_job, job, run


def remove_keys(k: QueueKeys) -> tuple[bytes, ...]:
    return (
        k.wait,
        k.delayed,
        k.completed,
        k.dead,
        k.cancelled,
        k.jobs,
        k.data,
        k.errors,
        k.progress,
        k.result,
    )


def promote_keys(k: QueueKeys) -> tuple[bytes, ...]:
    return (k.delayed, k.wait, k.jobs, k.marker)


HASHES = ("jobs", "data", "errors", "progress", "result")


async def traces(raw: Any, keys: QueueKeys, job_id: str) -> list[str]:
    """Where the job still appears: hash fields and index members."""
    found = [h for h in HASHES if await raw.hexists(getattr(keys, h), job_id)]
    for state, index in keys.index.items():
        members = await raw.zrange(index, 0, -1)
        if any(m.endswith(job_id.encode()) for m in members):
            found.append(state.value)
    return found


def test_headers_document_the_keys_the_backend_passes() -> None:
    for name, count in (("remove", 10), ("promote", 4)):
        header = SCRIPTS_DIR.joinpath(f"{name}.lua").read_text().split("]]", 1)[0]
        assert f"KEYS[{count}]" in header and f"KEYS[{count + 1}]" not in header
        assert "ARGV[1] job id" in header and "ARGV[2] now_ms" in header


@pytest.mark.parametrize("state", ["waiting", "delayed", "completed", "dead", "cancelled"])
async def test_remove_clears_every_hash_and_index_entry(
    rb: RedisBackend, keys: QueueKeys, queue_name: str, raw: Any, state: str
) -> None:
    if state == "delayed":
        await rb.enqueue([msgspec.structs.replace(job(queue_name, "j1"), ready_ms=T0 + 9)], T0)
    elif state in ("waiting", "cancelled"):
        await rb.enqueue([job(queue_name, "j1")], T0)
        if state == "cancelled":
            await rb.cancel(queue_name, "j1", now_ms=T0 + 1)
    else:
        lease = Lease(queue_name, "j1", await active_job(rb, queue_name))
        if state == "completed":
            assert await rb.complete([Completion(lease, b"1", T0)], T0 + 1) == [True]
        else:
            await rb.dead_letter(lease, reason="failed", error=None, now_ms=T0 + 1)
    assert await traces(raw, keys, "j1")

    assert await run(rb, "remove", remove_keys(keys), "j1", T0 + 5) == 1

    assert await traces(raw, keys, "j1") == []
    assert await run(rb, "remove", remove_keys(keys), "j1", T0 + 6) == 0


async def test_remove_of_finished_jobs_clears_result_errors_and_progress(
    rb: RedisBackend, keys: QueueKeys, queue_name: str, raw: Any
) -> None:
    token = await active_job(rb, queue_name, "ok")
    await rb.update_progress(Lease(queue_name, "ok", token), b"50")
    await rb.complete([Completion(Lease(queue_name, "ok", token), b'{"r":1}', T0)], T0 + 1)
    assert set(await traces(raw, keys, "ok")) >= {"jobs", "data", "result", "progress"}

    assert await run(rb, "remove", remove_keys(keys), "ok", T0 + 5) == 1

    assert await traces(raw, keys, "ok") == []
    assert await rb.counts(queue_name) == dict.fromkeys(JobState, 0)


async def test_remove_refuses_an_active_job(
    rb: RedisBackend, keys: QueueKeys, queue_name: str, raw: Any
) -> None:
    await active_job(rb, queue_name)
    before = await raw.hget(keys.jobs, "j1")

    assert await run(rb, "remove", remove_keys(keys), "j1", T0 + 5) == 0

    assert await raw.hget(keys.jobs, "j1") == before
    assert await raw.zscore(keys.active, "j1") is not None


async def test_promote_moves_a_delayed_job_to_wait_and_sets_the_marker(
    rb: RedisBackend, keys: QueueKeys, queue_name: str, raw: Any
) -> None:
    later = msgspec.structs.replace(job(queue_name, "later"), ready_ms=T0 + 60_000)
    await rb.enqueue([later], T0)
    await raw.delete(keys.marker)

    assert await run(rb, "promote", promote_keys(keys), "later", T0 + 10) == 1

    assert await raw.zcard(keys.delayed) == 0
    [member] = await raw.zrange(keys.wait, 0, -1)
    assert member.startswith(b"%015d" % (T0 + 10)) and member.endswith(b"later")
    assert await raw.zscore(keys.marker, "w") is not None
    stored = await rb.get(queue_name, "later")
    assert stored is not None and stored.ready_ms == T0 + 10


async def test_promote_answers_zero_for_other_states_without_waking_anyone(
    rb: RedisBackend, keys: QueueKeys, queue_name: str, raw: Any
) -> None:
    await active_job(rb, queue_name, "busy")
    await rb.enqueue([job(queue_name, "ready")], T0)
    await raw.delete(keys.marker)

    for job_id in ("busy", "ready", "missing"):
        assert await run(rb, "promote", promote_keys(keys), job_id, T0 + 10) == 0

    assert await raw.exists(keys.marker) == 0
