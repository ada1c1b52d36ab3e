"""Each Lua script called directly, with the KEYS and ARGV its header documents: what it
returns, and every negative error code it can answer (and what the backend raises)."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import msgspec
import pytest

from shigoto.backends.contract import Completion, Lease, NewJob, QueueLimits
from shigoto.backends.redis import RedisBackend
from shigoto.backends.redis import scripts as scripts_module
from shigoto.backends.redis.records import FRESH, QueueKeys, job_values
from shigoto.backends.redis.scripts import (
    BAD_ARGUMENTS,
    LEASE_LOST,
    OVER_LIMIT,
    SCRIPT_NAMES,
    SCRIPTS_DIR,
    check,
    load_scripts,
)
from shigoto.errors import ConfigurationError, LeaseLost, ShigotoError
from shigoto.job import REMOVE_ALL, AttemptError, JobOptions, JobState

T0 = 1_700_000_000_000
SCRIPTS = load_scripts()


def _read_include(name: str) -> str:
    return SCRIPTS_DIR.joinpath("includes", f"{name}.lua").read_text()


async def run(rb: RedisBackend, name: str, keys: tuple[bytes, ...], *args: Any) -> Any:
    """The script's raw reply (negative codes are returned, not raised)."""
    return await rb._eval(SCRIPTS[name], keys, args)


def job(queue: str, job_id: str, **options: Any) -> NewJob:
    return NewJob(
        id=job_id,
        queue=queue,
        name="task",
        payload=b'{"n":1}',
        options=JobOptions(**options),
        created_ms=T0,
        ready_ms=T0,
    )


def enqueue_keys(k: QueueKeys) -> tuple[bytes, ...]:
    return (k.meta, k.wait, k.delayed, k.jobs, k.data, k.marker, k.dedup, k.dedup_check)


def claim_keys(k: QueueKeys) -> tuple[bytes, ...]:
    return (
        *(k.meta, k.wait, k.delayed, k.active, k.jobs, k.data, k.errors, k.progress, k.marker),
        *(k.limits, k.rate, k.grate, k.grate_exp),
    )


def finish_keys(k: QueueKeys, index: bytes) -> tuple[bytes, ...]:
    return (k.active, index, k.jobs, k.data, k.errors, k.progress, k.result)


async def active_job(rb: RedisBackend, queue: str, job_id: str = "j1", **options: Any) -> str:
    """Enqueue and claim one job; returns its token."""
    await rb.enqueue([job(queue, job_id, **options)], T0)
    [claimed] = await rb.claim(queue, limit=1, worker_id="w", lease_ms=30_000, now_ms=T0)
    return claimed.token


# -- the headers and the error-code map -----------------------------------------------


def test_every_script_has_a_header_naming_keys_argv_returns_and_errors() -> None:
    for name in SCRIPT_NAMES:
        body = SCRIPTS_DIR.joinpath(f"{name}.lua").read_text()
        header, code = body.split("]]", 1)
        assert header.startswith(f"--[[ {name}:"), name
        for part in ("KEYS[1]", "Returns:", "Errors:"):
            assert part in header, f"{name}.lua header lacks {part}"
        if "ARGV" in code:
            assert "ARGV" in header, f"{name}.lua reads ARGV but its header does not list it"


def test_every_error_code_a_script_returns_is_documented_in_its_header() -> None:
    for name, script in SCRIPTS.items():
        header = SCRIPTS_DIR.joinpath(f"{name}.lua").read_text().split("]]", 1)[0]
        documented = {int(code) for code in re.findall(r"^\s*(?:Errors:)?\s+(-\d)\s", header, re.M)}
        returned = {int(code) for code in re.findall(r"return (-\d)\b", script.body)}
        assert returned == documented, f"{name}: returns {returned}, documents {documented}"


def test_scripts_are_package_data_loaded_with_their_includes_pasted_in() -> None:
    assert resources.files("shigoto.backends.redis").joinpath("lua", "claim.lua").is_file()
    for script in SCRIPTS.values():
        assert not re.search(r"^--- @include", script.body, re.M)
        assert "redis.call('KEYS'" not in script.body and "'SCAN'" not in script.body
        if script.name == "claim":
            # the one exception: a claim pipelined behind a blocking wait (ARGV[6])
            server_clock = script.body.split("if ARGV[6] then", 1)[1].split("end", 1)[0]
            assert script.body.count("'TIME'") == 1 and "'TIME'" in server_clock
        else:
            assert "'TIME'" not in script.body, "time comes in as now_ms, never from Redis"


def test_a_script_gets_only_the_include_helpers_it_uses() -> None:
    """Lua creates every helper an include defines at each call of a script, so each
    script gets only those it calls, directly or through another helper."""
    helpers = set(re.findall(r"^local function (\w+)", _read_include("job"), re.M))
    defined_in_includes = {
        name
        for include in ("job", "store", "batch", "audit")
        for name in re.findall(r"^local (?:function )?(\w+)", _read_include(include), re.M)
    }
    for script in SCRIPTS.values():
        code = re.sub(r"--\[\[.*?\]\]|^\s*--[^\n]*", "", script.body, flags=re.S | re.M)
        for name in defined_in_includes:  # what a script's code names, it defines
            if re.search(rf"\b{name}\b", code):
                assert re.search(rf"^local (function )?{name}\b", script.body, re.M), (
                    script.name,
                    name,
                )
        defined = set(re.findall(r"^local function (\w+)", script.body, re.M)) & helpers
        for name in defined:  # each one is called somewhere besides its definition
            assert len(re.findall(rf"\b{name}\b", script.body)) > 1, (script.name, name)
    counts = SCRIPTS["counts"].body
    assert "local function" not in counts  # it includes nothing
    complete = SCRIPTS["complete"].body
    # complete calls trim, which calls forget, which it does not call itself
    assert "local function trim(" in complete and "local function forget(" in complete
    assert "local function promote(" not in complete


def test_an_include_with_code_between_its_definitions_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Statements between definitions would be dropped with the definitions around
    them: the loader refuses such an include instead."""
    text = "local A = 1\n\nredis.call('DEL', KEYS[1])\n\nlocal function f()\n  return A\nend\n"
    monkeypatch.setattr(scripts_module, "_read", lambda relative: text)
    with pytest.raises(ValueError, match="code between definitions"):
        scripts_module._definitions("broken")


def test_negative_codes_map_to_exceptions_in_one_place() -> None:
    script = SCRIPTS["retry"]
    assert check(script, 1) == 1
    assert check(script, [-1, -2]) == [-1, -2]  # arrays are results, never errors
    with pytest.raises(LeaseLost, match="job j9"):
        check(script, LEASE_LOST, job_id="j9")
    with pytest.raises(ConfigurationError, match="limit"):
        check(script, OVER_LIMIT)
    with pytest.raises(ConfigurationError, match="malformed"):
        check(script, BAD_ARGUMENTS)
    with pytest.raises(ShigotoError, match="unknown error code -9"):
        check(script, -9)


# -- producing --------------------------------------------------------------------------


async def test_enqueue_stores_a_batch_and_reports_existing_ids(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    args = [T0, 7, *job_values(job(queue_name, "a"), T0), *job_values(job(queue_name, "a"), T0)]
    reply = await run(rb, "enqueue", enqueue_keys(keys), *args)
    assert reply == [0, 1, b"waiting", b"a", 0, b"waiting", b"a"]


def five(queue_name: str, job_id: str, ready_ms: int = T0) -> tuple[Any, ...]:
    new = msgspec.structs.replace(job(queue_name, job_id), ready_ms=ready_ms)
    return job_values(new, T0, dedup=False)


async def test_a_batch_stored_whole_as_waiting_is_answered_with_one_value(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    # the usual bulk add: the caller knows the ids, so three values per job would only
    # cost Redis and the caller time to write and read
    batch = [v for n in range(3) for v in five(queue_name, f"j{n}")]
    assert await run(rb, "enqueue", enqueue_keys(keys), T0, 5, *batch) == [1]

    # once one job is not stored (or not waiting), every job is answered for, in order
    again = [*five(queue_name, "j3"), *five(queue_name, "j0"), *five(queue_name, "j4")]
    assert await run(rb, "enqueue", enqueue_keys(keys), T0, 5, *again) == [
        *(0, 1, b"waiting", b"j3"),
        *(0, b"waiting", b"j0"),
        *(1, b"waiting", b"j4"),
    ]
    later = [*five(queue_name, "j5"), *five(queue_name, "j6", ready_ms=T0 + 5)]
    assert await run(rb, "enqueue", enqueue_keys(keys), T0, 5, *later) == [
        *(0, 1, b"waiting", b"j5"),
        *(1, b"delayed", b"j6"),
    ]
    assert (await rb.counts(queue_name))[JobState.WAITING] == 6


async def test_enqueue_error_codes(rb: RedisBackend, keys: QueueKeys, queue_name: str) -> None:
    values = job_values(job(queue_name, "a"), T0)
    assert await run(rb, "enqueue", enqueue_keys(keys), T0, 7, *values[:-1]) == BAD_ARGUMENTS
    assert await run(rb, "enqueue", enqueue_keys(keys), T0, 6, *values[:-1]) == BAD_ARGUMENTS
    assert await run(rb, "enqueue", enqueue_keys(keys), T0, *values) == BAD_ARGUMENTS
    too_many = [v for n in range(1001) for v in job_values(job(queue_name, f"j{n}"), T0)]
    assert await run(rb, "enqueue", enqueue_keys(keys), T0, 7, *too_many) == OVER_LIMIT
    assert await rb.counts(queue_name) == dict.fromkeys(JobState, 0)


async def test_the_backend_splits_batches_larger_than_a_script_takes(
    rb: RedisBackend, queue_name: str
) -> None:
    done = await rb.enqueue([job(queue_name, f"j{n}") for n in range(2500)], T0)
    assert len(done) == 2500 and all(d.created for d in done)
    claimed = await rb.claim(queue_name, limit=5000, worker_id="w", lease_ms=1000, now_ms=T0)
    assert len(claimed) == 1000  # "up to limit": one script call claims at most 1,000


# -- consuming --------------------------------------------------------------------------


async def test_claim_returns_next_due_and_hold_then_five_values_per_job(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    later = msgspec.structs.replace(job(queue_name, "later"), ready_ms=T0 + 5000)
    await rb.enqueue([job(queue_name, "now"), later], T0)
    reply = await run(rb, "claim", claim_keys(keys), T0, 10, "w", T0 + 100, "tok")
    assert reply[0] == T0 + 5000
    assert reply[1:3] == [-1, 0]  # no limit held the claim back
    assert reply[3] == b"now" and len(reply) == 8
    assert reply[6] is None and reply[7] is None  # no errors, no progress yet
    paused = await run(rb, "set_paused", (keys.meta, keys.marker), "1")
    assert paused == 1
    assert await run(rb, "claim", claim_keys(keys), T0 + 9000, 10, "w", T0, "t") == [-1, -1, 0]


async def test_a_new_jobs_state_is_leased_by_editing_its_bytes(
    rb: RedisBackend, keys: QueueKeys, queue_name: str, raw: Any
) -> None:
    """claim.lua leases a state as records.py wrote it without decoding it: `a` = 0
    (packed as a uint8, which no encoder writes by itself) becomes 1 in place and the
    lease's fields are appended. Decoded, it is exactly the state the general path
    writes, which a state some script has rewritten still takes."""
    await rb.enqueue([job(queue_name, "new"), job(queue_name, "again")], T0)
    stored = await raw.hget(keys.jobs, "new")
    assert stored[1:5] == FRESH
    await run(rb, "claim", claim_keys(keys), T0, 1, "w", T0 + 100, "tok")
    leased = await raw.hget(keys.jobs, "new")
    assert leased[3:6] == b"\xa1a\x01" and leased.endswith(b"\xa1t\xa4tok1")
    lease = {"s": "active", "t": "tok1", "w": "w", "l": T0 + 100, "sm": T0}
    expected = {**msgspec.msgpack.decode(stored), "a": 1, **lease}
    assert msgspec.msgpack.decode(leased) == expected

    # a state no longer as written at enqueue (released, so rewritten by a script)
    # takes the general path, and both paths store the same fields
    await rb.release([Lease(queue_name, "new", "tok1")], now_ms=T0)
    rewritten = await raw.hget(keys.jobs, "new")
    assert rewritten[1:5] != FRESH
    reply = await run(rb, "claim", claim_keys(keys), T0, 2, "w", T0 + 100, "tok")
    assert [reply[3], reply[8]] == [b"new", b"again"]
    again = msgspec.msgpack.decode(await raw.hget(keys.jobs, "again"))
    assert again == {**expected, "q": again["q"], "t": "tok2"}
    released = msgspec.msgpack.decode(await raw.hget(keys.jobs, "new"))
    assert released["a"] == 1 + msgspec.msgpack.decode(rewritten)["a"]
    assert {key: released[key] for key in lease} == lease


async def test_a_queues_indexes_are_never_listpacks_and_their_pin_is_no_job(
    rb: RedisBackend, keys: QueueKeys, queue_name: str, raw: Any
) -> None:
    """Redis stores a small sorted set or hash as a listpack, in which finding, adding or
    removing one entry scans all of them. ``active``, ``jobs``, ``data`` and ``result``
    hold one extra entry, longer than a listpack entry may be, so they are a skiplist or
    a hash table from their first write on, and stay one when their last job leaves. No
    count, listing, limit or recovery takes it for a job."""
    await rb.enqueue([job(queue_name, n) for n in ("a", "b", "c")], T0)
    for key in (keys.jobs, keys.data):
        assert await raw.object("encoding", key) == b"hashtable"
    await rb.set_limits(queue_name, QueueLimits(max_active=2))
    [first] = await rb.claim(queue_name, limit=1, worker_id="w", lease_ms=1000, now_ms=T0)
    assert await raw.object("encoding", keys.active) == b"skiplist"
    assert await raw.zcard(keys.active) == 2  # the job and the pin
    assert (await rb.counts(queue_name))[JobState.ACTIVE] == 1
    assert [r.id for r in await rb.list_jobs(queue_name, JobState.ACTIVE)] == ["a"]
    # max_active 2 counts the one job, not the pin: one more may start
    more = await rb.claim(queue_name, limit=5, worker_id="w", lease_ms=1000, now_ms=T0)
    assert [c.record.id for c in more] == ["b"]
    by_name = await rb.counts_by_name(queue_name, limit=2)  # 2 jobs (and the pin) active
    assert by_name.counts["task"][JobState.ACTIVE] == 2 and by_name.complete

    done = [Lease(queue_name, c.record.id, c.token) for c in (first, *more)]
    completions = [Completion(done[0], b"1", T0), Completion(done[1], None, T0)]
    assert await rb.complete(completions, T0) == [True] * 2
    assert await raw.object("encoding", keys.result) == b"hashtable"
    assert await raw.object("encoding", keys.active) == b"skiplist"
    assert (await rb.counts(queue_name))[JobState.ACTIVE] == 0
    assert await rb.list_jobs(queue_name, JobState.ACTIVE) == []
    assert len(await rb.claim(queue_name, limit=1, worker_id="w", lease_ms=1000, now_ms=T0)) == 1
    # recovery takes the expired lease, never the pin (scored +inf)
    recovered = await rb.recover_stalled(queue_name, now_ms=T0 + 10**9, limit=10)
    assert [r.job_id for r in recovered] == ["c"]
    assert await raw.zcard(keys.active) == 1


async def test_claim_error_codes(rb: RedisBackend, keys: QueueKeys) -> None:
    for limit in (0, 1001, "x"):
        assert await run(rb, "claim", claim_keys(keys), T0, limit, "w", T0, "t") == OVER_LIMIT


async def test_extend_reports_held_cancelled_or_lost_and_its_error_codes(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    token = await active_job(rb, queue_name)
    k = (keys.active, keys.jobs)
    assert await run(rb, "extend", k, T0 + 9, "j1", token, "j1", "stale", "nope", "x") == [1, 0, 0]
    await rb.cancel(queue_name, "j1", now_ms=T0)
    assert await run(rb, "extend", k, T0 + 9, "j1", token) == [2]
    assert await run(rb, "extend", k, T0 + 9, "j1") == BAD_ARGUMENTS
    assert await run(rb, "extend", k, T0 + 9, *(["j1", token] * 1001)) == OVER_LIMIT


async def test_update_progress_and_its_lease_lost_code(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    token = await active_job(rb, queue_name)
    k = (keys.jobs, keys.progress)
    assert await run(rb, "update_progress", k, "j1", token, b"42") == 1
    assert await run(rb, "update_progress", k, "j1", "stale", b"43") == LEASE_LOST
    assert await run(rb, "update_progress", k, "missing", token, b"43") == LEASE_LOST
    assert (await rb.get(queue_name, "j1")).progress == b"42"  # type: ignore[union-attr]


async def test_complete_answers_per_job_and_its_error_codes(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    token = await active_job(rb, queue_name)
    k = finish_keys(keys, keys.completed)
    assert await run(rb, "complete", k, T0, "j1", token, b"1", "j1", token, b"") == [1, 0]
    assert await run(rb, "complete", k, T0, "j1", token) == BAD_ARGUMENTS
    assert await run(rb, "complete", k, T0, *(["j1", token, b""] * 1001)) == OVER_LIMIT


async def test_retry_outcomes_and_its_lease_lost_code(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    k = (keys.wait, keys.delayed, keys.active, keys.jobs, keys.errors, keys.marker, keys.cancelled)
    error = (
        b'{"attempt":1,"error_type":"E","message":"m","traceback":"","worker_id":"w",'
        b'"started_ms":null,"ended_ms":1}'
    )
    token = await active_job(rb, queue_name, "gone")
    await rb.cancel(queue_name, "gone", now_ms=T0)
    assert await run(rb, "retry", k, "gone", token, T0 + 10, T0, error) == 3  # cancelled
    token = await active_job(rb, queue_name, "later")
    assert await run(rb, "retry", k, "later", token, T0 + 10, T0, error) == 1  # delayed
    token = await active_job(rb, queue_name, "now")
    assert await run(rb, "retry", k, "now", token, T0, T0, error) == 2  # waiting
    assert await run(rb, "retry", k, "now", token, T0, T0, error) == LEASE_LOST
    with pytest.raises(LeaseLost):
        await rb.retry(Lease(queue_name, "now", token), run_at_ms=T0, error=_error(), now_ms=T0)


def _error() -> AttemptError:
    return AttemptError(1, "E", "m", "", "w", None, T0)


async def test_dead_letter_outcomes_and_its_lease_lost_code(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    k = finish_keys(keys, keys.dead)
    token = await active_job(rb, queue_name, "kept")
    assert await run(rb, "dead_letter", k, "kept", token, "unrecoverable", T0, b"") == 1
    assert await run(rb, "dead_letter", k, "kept", token, "again", T0, b"") == LEASE_LOST
    token = await active_job(rb, queue_name, "removed", remove_on_fail=REMOVE_ALL)
    assert await run(rb, "dead_letter", k, "removed", token, "x", T0, b"") == 2
    assert await rb.get(queue_name, "removed") is None


async def test_release_answers_per_job_and_its_error_codes(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    token = await active_job(rb, queue_name)
    k = (keys.wait, keys.active, keys.jobs, keys.errors, keys.marker, keys.cancelled)
    assert await run(rb, "release", k, T0, b"", "j1", token, "j1", token) == [1, 0]
    assert await run(rb, "release", k, T0, b"", "j1") == BAD_ARGUMENTS
    assert await run(rb, "release", k, T0, b"", *(["j1", token] * 1001)) == OVER_LIMIT


# -- housekeeping -----------------------------------------------------------------------


async def test_promote_due_counts_moves_and_its_error_code(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    later = msgspec.structs.replace(job(queue_name, "later"), ready_ms=T0 + 5)
    await rb.enqueue([later], T0)
    k = (keys.delayed, keys.wait, keys.jobs, keys.marker)
    assert await run(rb, "promote_due", k, T0, 10) == 0
    assert await run(rb, "promote_due", k, T0 + 5, 10) == 1
    assert await run(rb, "promote_due", k, T0, 0) == OVER_LIMIT
    assert await run(rb, "promote_due", k, T0, 1001) == OVER_LIMIT


async def test_recover_stalled_returns_pairs_and_its_error_code(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    await active_job(rb, queue_name, max_stalls=0)
    k = (keys.wait, keys.active, keys.dead, keys.jobs, keys.errors, keys.marker)
    assert await run(rb, "recover_stalled", k, T0 + 30_000, 10) == []  # not before expiry
    assert await run(rb, "recover_stalled", k, T0 + 30_001, 10) == [b"j1", b"dead"]
    assert await run(rb, "recover_stalled", k, T0, 1001) == OVER_LIMIT


# -- reading ----------------------------------------------------------------------------


async def test_get_counts_and_list_jobs_read_snapshots(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    await rb.enqueue([job(queue_name, "a"), job(queue_name, "b", priority=1)], T0)
    hashes = (keys.jobs, keys.data, keys.errors, keys.progress, keys.result)
    assert await run(rb, "get", hashes, "missing") is None
    assert len(await run(rb, "get", hashes, "a")) == 5
    indexes = tuple(keys.index[s] for s in JobState)
    assert await run(rb, "counts", indexes) == [2, 0, 0, 0, 0, 0]
    listing = await run(rb, "list_jobs", (keys.wait, *hashes), "waiting", 0, 10)
    assert listing[0::6] == [b"b", b"a"]  # priority first
    assert await run(rb, "list_jobs", (keys.wait, *hashes), "waiting", 0, 1001) == OVER_LIMIT
    assert await run(rb, "list_jobs", (keys.wait, *hashes), "bogus", 0, 10) == BAD_ARGUMENTS
    assert await run(rb, "list_jobs", (keys.wait, *hashes), "waiting", -1, 10) == BAD_ARGUMENTS


# -- administering ----------------------------------------------------------------------


async def test_cancel_set_paused_and_redrive(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    await rb.enqueue([job(queue_name, "a")], T0)
    k = (keys.wait, keys.delayed, keys.cancelled, keys.jobs)
    assert await run(rb, "cancel", k, "a", T0) == b"cancelled"
    assert await run(rb, "cancel", k, "missing", T0) is None
    assert await run(rb, "set_paused", (keys.meta, keys.marker), "maybe") == BAD_ARGUMENTS
    redrive = (
        keys.wait,
        keys.delayed,
        keys.dead,
        keys.jobs,
        keys.errors,
        keys.progress,
        keys.result,
        keys.marker,
    )
    assert await run(rb, "redrive", redrive, T0, T0, b"", "a") == []  # cancelled, not dead
    assert await run(rb, "redrive", redrive, T0, T0, b"", *["a"] * 1001) == OVER_LIMIT


async def test_dead_letter_scripts_and_their_error_codes(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    token = await active_job(rb, queue_name)
    await rb.dead_letter(
        Lease(queue_name, "j1", token),
        reason="unrecoverable",
        error=None,
        now_ms=T0 + 7,
    )
    k = (keys.dead, keys.jobs, keys.errors)
    page = await run(rb, "list_dead", k, "", 10, "", "", "", "", "")
    assert page[0] is None and page[1] == b"j1"
    assert await run(rb, "list_dead", k, "", 0, "", "", "", "", "") == OVER_LIMIT
    assert await run(rb, "list_dead", k, "nope", 10, "", "", "", "", "") == BAD_ARGUMENTS
    purge = (keys.dead, keys.jobs, keys.data, keys.errors, keys.progress, keys.result)
    assert await run(rb, "purge_dead", purge, *["x"] * 1001) == OVER_LIMIT
    assert await run(rb, "purge_dead", purge, "j1", "missing") == [b"j1"]


async def test_once_scripts(rb: RedisBackend, keys: QueueKeys) -> None:
    k = (keys.once, keys.once_exp)
    assert await run(rb, "once_claim", k, "mail:1", "a", 1000, T0) == [b"claimed"]
    assert await run(rb, "once_claim", k, "mail:1", "b", 1000, T0) == [
        b"busy",
        None,
        b"a",
        T0 + 1000,
    ]
    assert await run(rb, "once_mark", k, "mail:1", "a", T0, "1", b'"ok"', "") == 1
    assert await run(rb, "once_claim", k, "mail:1", "b", 1000, T0) == [b"done", b'"ok"']
    assert await run(rb, "once_release", k, "mail:1", "a") == 0  # done is never released


async def test_schedule_scripts_and_their_error_codes(
    rb: RedisBackend, keys: QueueKeys, queue_name: str
) -> None:
    g = rb.globals
    registry = (g.schedules, g.schedule_names)
    assert await run(rb, "register_schedules", registry, T0, "a", "b") == 2
    assert await run(rb, "register_schedules", registry, T0, "a") == 0
    assert await run(rb, "register_schedules", registry, T0, *["x"] * 1001) == OVER_LIMIT
    states = (*registry, g.schedule_defs)
    assert (await run(rb, "schedule_states", states, 10))[0::3] == [b"a", b"b"]
    assert await run(rb, "schedule_states", states, 0) == OVER_LIMIT
    assert await run(rb, "save_schedule", states, "a", b"{}", T0) == 1
    tick = (*enqueue_keys(keys), keys.ticks)
    values = job_values(job(queue_name, "cron:a:1"), T0)
    assert await run(rb, "claim_tick", tick, "a", T0, T0, -1, *values) == 1
    assert await run(rb, "claim_tick", tick, "a", T0, T0, -1, *values) == 0
    assert await run(rb, "claim_tick", tick, "a", T0 + 1, T0, T0 + 1, *values) == 0  # floor
    record = (g.schedules, g.schedule_names)
    assert await run(rb, "claim_tick_record", record, "a", T0, queue_name, "cron:a:1", T0) == 1
    assert await run(rb, "delete_schedule", states, "a") == queue_name.encode()
    assert await run(rb, "delete_schedule", states, "a") is None
