"""The rate-limit scripts called directly (set_limits.lua, postpone.lua, and claim.lua's
limits): what they store, what they answer, and each negative error code."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from shigoto.backends.contract import Lease, NewJob, QueueLimits
from shigoto.backends.redis import RedisBackend
from shigoto.backends.redis.records import QueueKeys
from shigoto.backends.redis.scripts import BAD_ARGUMENTS, LEASE_LOST, load_scripts
from shigoto.errors import ConfigurationError, LeaseLost
from shigoto.job import JobOptions, JobState

T0 = 1_700_000_000_000
SCRIPTS = load_scripts()


async def run(rb: RedisBackend, name: str, keys: tuple[bytes, ...], *args: Any) -> Any:
    return await rb._eval(SCRIPTS[name], keys, args)


def job(queue: str, job_id: str, group: str | None = None) -> NewJob:
    return NewJob(
        id=job_id,
        queue=queue,
        name="task",
        payload=b"{}",
        options=JobOptions(),
        created_ms=T0,
        ready_ms=T0,
        group=group,
    )


def claim_keys(k: QueueKeys) -> tuple[bytes, ...]:
    return (
        *(k.meta, k.wait, k.delayed, k.active, k.jobs, k.data, k.errors, k.progress, k.marker),
        *(k.limits, k.rate, k.grate, k.grate_exp),
    )


def postpone_keys(k: QueueKeys) -> tuple[bytes, ...]:
    return (k.wait, k.delayed, k.active, k.jobs, k.marker, k.cancelled, k.limits)


async def test_set_limits_stores_fields_and_removes_those_left_empty(
    rb: RedisBackend, keys: QueueKeys, raw: Any
) -> None:
    k = (keys.limits, keys.marker)
    assert await run(rb, "set_limits", k, "100", "1000", "5", "", "") == 1
    assert await raw.hgetall(keys.limits) == {b"rm": b"100", b"rp": b"1000", b"ma": b"5"}
    assert await run(rb, "set_limits", k, "", "", "", "3", "60000") == 1
    assert await raw.hgetall(keys.limits) == {b"gm": b"3", b"gp": b"60000"}
    assert await raw.zscore(keys.marker, "w") is not None  # idle workers look again


async def test_set_limits_error_code_for_malformed_arguments(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    k = (keys.limits, keys.marker)
    assert await run(rb, "set_limits", k, "100", "1000", "5", "") == BAD_ARGUMENTS
    for bad in ("0", "-1", "1.5", "x"):
        assert await run(rb, "set_limits", k, bad, "1000", "", "", "") == BAD_ARGUMENTS
    bad_limits = QueueLimits(rate_max=0, rate_period_ms=1000)
    with pytest.raises(ConfigurationError, match="malformed"):
        await rb.set_limits(queue_name, bad_limits)


async def test_claim_reports_when_the_next_slot_opens(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    await rb.enqueue([job(queue_name, f"j{i}") for i in range(9)], T0)
    await rb.set_limits(queue_name, QueueLimits(rate_max=2, rate_period_ms=1000))
    reply = await run(rb, "claim", claim_keys(keys), T0, 1, "w", T0 + 100, "a")
    assert reply[1:3] == [-1, 0] and len(reply) == 3 + 5  # one of two: not used up
    reply = await run(rb, "claim", claim_keys(keys), T0 + 10, 10, "w", T0 + 100, "b")
    # the last slot taken: the window is used up until the claim at T0 leaves it
    assert reply[1:3] == [T0 + 1000, 0] and len(reply) == 3 + 5
    reply = await run(rb, "claim", claim_keys(keys), T0 + 300, 10, "w", T0 + 400, "c")
    assert reply == [-1, T0 + 1000, 0]  # nothing claimed
    await rb.set_limits(queue_name, QueueLimits(max_active=3))
    reply = await run(rb, "claim", claim_keys(keys), T0 + 300, 10, "w", T0 + 400, "d")
    # max_active used up with this one: only a finishing job frees a slot (capped)
    assert reply[1:3] == [T0 + 300 + 50, 1] and len(reply) == 3 + 5
    reply = await run(rb, "claim", claim_keys(keys), T0 + 300, 10, "w", T0 + 400, "e")
    assert reply == [-1, T0 + 300 + 50, 1]
    await rb.set_limits(queue_name, QueueLimits(max_active=3, rate_max=2, rate_period_ms=1000))
    reply = await run(rb, "claim", claim_keys(keys), T0 + 300, 10, "w", T0 + 400, "f")
    assert reply == [-1, T0 + 1000, 0]  # the rate is in the way too: not capped


async def test_postpone_outcomes_and_its_error_codes(
    rb: RedisBackend, keys: QueueKeys, queue_name: str, raw: Any
) -> None:
    k = postpone_keys(keys)
    await rb.enqueue([job(queue_name, "a"), job(queue_name, "b"), job(queue_name, "c")], T0)
    claimed = {
        c.record.id: c.token
        for c in await rb.claim(queue_name, limit=3, worker_id="w", lease_ms=1000, now_ms=T0)
    }
    assert await run(rb, "postpone", k, "a", claimed["a"], T0 + 500, T0, "0") == 1  # delayed
    assert await raw.hget(keys.limits, "hu") is None
    assert await run(rb, "postpone", k, "b", claimed["b"], T0, T0, "1") == 2  # waiting
    assert await raw.hget(keys.limits, "hu") is None  # nothing to hold for
    await rb.cancel(queue_name, "c", now_ms=T0)
    assert await run(rb, "postpone", k, "c", claimed["c"], T0 + 9, T0, "1") == 3  # cancelled
    assert await run(rb, "postpone", k, "a", claimed["a"], T0 + 9, T0, "1") == LEASE_LOST
    assert await run(rb, "postpone", k, "a", "tok", "soon", T0, "1") == BAD_ARGUMENTS
    assert await run(rb, "postpone", k, "a", "tok", T0, T0, "yes") == BAD_ARGUMENTS
    with pytest.raises(LeaseLost):
        await rb.postpone(Lease(queue_name, "a", "stale"), run_at_ms=T0, hold=True, now_ms=T0)
    record = await rb.get(queue_name, "a")
    assert record is not None
    assert (record.state, record.attempts) == (JobState.DELAYED, 0)


async def test_postpone_with_hold_holds_the_group_when_the_queue_has_group_limits(
    rb: RedisBackend, keys: QueueKeys, queue_name: str, raw: Any
) -> None:
    await rb.set_limits(queue_name, QueueLimits(group_rate_max=5, group_rate_period_ms=1000))
    await rb.enqueue([job(queue_name, "a", group="t1"), job(queue_name, "b")], T0)
    claimed = {
        c.record.id: c.token
        for c in await rb.claim(queue_name, limit=2, worker_id="w", lease_ms=1000, now_ms=T0)
    }
    k = postpone_keys(keys)
    assert await run(rb, "postpone", k, "a", claimed["a"], T0 + 700, T0, "1") == 1
    assert await raw.hget(keys.limits, "h:t1") == str(T0 + 700).encode()
    assert await run(rb, "postpone", k, "b", claimed["b"], T0 + 300, T0, "1") == 1
    assert await raw.hget(keys.limits, "hu") == str(T0 + 300).encode()


def test_a_group_rides_in_the_job_state_only_when_set() -> None:
    from shigoto.backends.redis.records import decode_state, new_state

    assert decode_state(new_state(job("q", "a"), T0, T0) + b"\xa1q\x01").g is None
    state = new_state(msgspec.structs.replace(job("q", "a"), group="t1"), T0, T0)
    assert decode_state(state + b"\xa1q\x01").g == "t1"
