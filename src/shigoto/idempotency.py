"""Idempotency built in: enqueue-side dedup keys and execution-side once-records.

Jobs run at least once: a worker can die after a side effect and before the job is
recorded as completed, and the job then runs again. Two tools keep that harmless:

* ``queue.add(..., dedup_key="welcome:42", dedup_ttl=3600)`` — while a job with that
  key is live (or within the TTL), adding another returns the existing job. Unlike
  ``job_id`` the key does not become the job's id, and it is released when the job
  finishes (unless the TTL still holds it), so the same work may be queued again later.
* ``await ctx.once("welcome-mail:42", send_mail, user)`` — runs ``send_mail(user)`` at
  most once *successfully* per key and queue, records that it happened (with its
  JSON result), and on a retry or a re-delivery skips it and returns the recorded
  result. The brief's "already sent this email?" check, done by the framework.

Why a call and not a bare ``if not await ctx.done(key): ...; await ctx.mark(key)``:
wrapping the effect lets the framework order claim → effect → record correctly, release
the claim when the effect raises (so the retry does it), and make a concurrent job
with the same key wait instead of doing the effect twice. See ``docs/idempotency.md``
for the one window that remains (a crash between the effect and its record) and how to
close it for effects that accept an idempotency key.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from .clock import Seconds, seconds_of, to_ms
from .errors import ConfigurationError, ShigotoError

if TYPE_CHECKING:
    from .backends.contract import Backend
    from .context import JobContext

log = logging.getLogger(__name__)

ONCE_TTL = timedelta(days=7)
"""How long ``ctx.once`` remembers an effect by default. Keep it longer than a job can
be retried *or sit in the dead-letter queue before a redrive*; ``ttl=None`` keeps the
record until the key is reused with a shorter TTL (forever, in practice)."""
MAX_KEY_LENGTH = 512
MARK_TRIES = 3
BUSY_POLL_S = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class OnceBusy(ShigotoError):
    """Another job held the ``ctx.once`` key for longer than its claim should last.

    Raised after waiting out the other claim; the job is retried per its policy.
    """


def require_idempotency(backend: Backend) -> None:
    """Fail clearly on a backend that does not implement the idempotency section yet."""
    if not hasattr(backend, "once_claim"):
        name = getattr(getattr(backend, "capabilities", None), "name", type(backend).__name__)
        raise ConfigurationError(
            f"the {name} backend does not support dedup keys and ctx.once yet "
            "(contract section 'idempotency')"
        )


def check_key(key: object, what: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ConfigurationError(
            f"{what} must be a non-empty string of at most {MAX_KEY_LENGTH} characters, got {key!r}"
        )
    return key


def dedup_fields(key: str | None, ttl: Seconds | None) -> tuple[str | None, int | None]:
    """Validate ``dedup_key`` / ``dedup_ttl`` of ``add`` → ``NewJob`` fields."""
    if key is None:
        if ttl is not None:
            raise ConfigurationError("dedup_ttl needs a dedup_key")
        return None, None
    check_key(key, "dedup_key")
    if ttl is None:
        return key, None
    ttl_ms = _ttl_ms(ttl, "dedup_ttl")
    assert ttl_ms is not None
    return key, ttl_ms


def _ttl_ms(ttl: Seconds | None, what: str) -> int | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float | timedelta):
        raise ConfigurationError(f"{what} must be seconds or a timedelta, got {ttl!r}")
    if seconds_of(ttl) <= 0:
        raise ConfigurationError(f"{what} must be > 0 seconds, got {ttl!r}")
    return max(1, to_ms(ttl))


# -- ctx.once --------------------------------------------------------------------------


async def run_once(
    ctx: JobContext,
    key: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ttl: Seconds | None,
) -> Any:
    """``JobContext.once``: claim → effect → record, or the recorded result."""
    ttl_ms = _ttl_ms(ttl, "once ttl")
    done, value = await begin(ctx, key)
    if done:
        return value
    try:
        outcome = fn(*args, **kwargs)
        if inspect.isawaitable(outcome):
            outcome = await outcome
    except BaseException:
        await asyncio.shield(abort(ctx, key))
        raise
    await asyncio.shield(finish(ctx, key, outcome, ttl_ms))
    return outcome


async def begin(ctx: JobContext, key: str) -> tuple[bool, Any]:
    """Claim ``key`` for this job. Returns ``(True, recorded result)`` when the effect
    already happened, ``(False, None)`` when this job now holds the claim. Waits while
    another job holds it."""
    check_key(key, "once key")
    worker = ctx._worker
    backend = worker._require_backend()
    require_idempotency(backend)
    clock = worker.app.clock
    timeout_ms = to_ms(ctx.job.options.timeout_s or 0)
    lease_ms = max(worker._lease_ms, timeout_ms)
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    for step in range(1_000_000):
        claim = await backend.once_claim(
            ctx.queue, key, owner=ctx.job_id, lease_ms=lease_ms, now_ms=clock.now_ms()
        )
        if claim.status == "claimed":
            return False, None
        if claim.status == "done":
            ctx.log.info("once %r: already done, skipped", key)
            return True, None if claim.result is None else msgspec.json.decode(claim.result)
        # busy: another job is doing this effect right now; wait for its outcome
        if deadline is None:
            left_s = max(0.0, ((claim.until_ms or 0) - clock.now_ms()) / 1000)
            deadline = loop.time() + left_s + 1.0
            ctx.log.info("once %r: job %s is doing it, waiting", key, claim.holder)
        elif loop.time() > deadline:
            raise OnceBusy(
                f"once key {key!r} is still claimed by job {claim.holder} past its claim's end"
            )
        ctx.raise_if_cancelled()
        await asyncio.sleep(BUSY_POLL_S[min(step, len(BUSY_POLL_S) - 1)])
    raise AssertionError("unreachable")


async def finish(ctx: JobContext, key: str, outcome: Any, ttl_ms: int | None) -> None:
    """Record that the effect happened (a few tries: losing this record is what would
    make a retry repeat the effect)."""
    try:
        result: bytes | None = None if outcome is None else msgspec.json.encode(outcome)
    except (TypeError, ValueError, OverflowError):
        ctx.log.warning(
            "once %r: result %s is not JSON-encodable; recorded as done without it",
            key,
            type(outcome).__name__,
        )
        result = None
    worker = ctx._worker
    backend = worker._require_backend()
    for attempt in range(1, MARK_TRIES + 1):
        try:
            held = await backend.once_mark(
                ctx.queue,
                key,
                owner=ctx.job_id,
                result=result,
                ttl_ms=ttl_ms,
                now_ms=worker.app.clock.now_ms(),
            )
        except Exception:
            if attempt == MARK_TRIES:
                raise
            log.warning("once %r: recording failed, trying again", key, exc_info=True)
            await asyncio.sleep(0.1 * 2**attempt)
            continue
        if not held:
            ctx.log.warning(
                "once %r: the claim had expired before the effect finished; another "
                "job may have done it too (raise the job's timeout for long effects)",
                key,
            )
        return


async def abort(ctx: JobContext, key: str) -> None:
    """The effect raised: release the claim so that the retry may do it."""
    try:
        await ctx._worker._require_backend().once_release(ctx.queue, key, owner=ctx.job_id)
    except Exception:
        log.warning("once %r: could not release the claim; it expires by itself", key)


def run_once_sync(
    call: Callable[..., Any],
    ctx: JobContext,
    key: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ttl: Seconds | None,
) -> Any:
    """``SyncJobContext.once``: the effect runs in the handler's thread; ``call`` runs
    the backend steps on the worker's loop and blocks for them."""
    ttl_ms = _ttl_ms(ttl, "once ttl")
    done, value = call(begin, ctx, key)
    if done:
        return value
    try:
        outcome = fn(*args, **kwargs)
    except BaseException:
        call(abort, ctx, key)
        raise
    call(finish, ctx, key, outcome, ttl_ms)
    return outcome
