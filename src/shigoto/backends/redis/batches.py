"""Batches on Redis: one hash of counters per batch, a set of pending chunk indices.

A batch's keys live under its queue's hash tag, so recording chunks, finishing the batch
and storing the follow-up job are single scripts on one Redis Cluster slot. See
``lua/includes/batch.lua`` for the layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...job import JobState
from ..contract import BatchRecord, NewJob
from .plumbing import MAX_BATCH, RedisPlumbing
from .plumbing import chunks as split
from .records import job_values, queue_keys

EXPECT_STEP = 10_000


class _BatchKeys:
    __slots__ = ("batch", "failed", "index", "open", "pending")

    def __init__(self, prefix: str, queue: str, batch_id: str) -> None:
        tag = queue_keys(prefix, queue).tag
        base = f"{tag}:batch:{batch_id}"
        self.batch = base.encode()
        self.pending = f"{base}:pending".encode()
        self.failed = f"{base}:failed".encode()
        self.index = f"{tag}:batches".encode()
        self.open = f"{tag}:batches_open".encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(queue: str, reply: Any) -> BatchRecord | None:
    if reply is None:
        return None
    flat, failed = reply
    h = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}

    def opt_int(field: str) -> int | None:
        return None if field not in h else int(h[field])

    return BatchRecord(
        id=_text(h["id"]),
        queue=queue,
        name=_text(h["n"]),
        created_ms=int(h["cm"]),
        definition=bytes(h["d"]),
        updated_ms=int(h.get("um", h["cm"])),
        total_chunks=opt_int("tc"),
        total_items=opt_int("ti"),
        completed=int(h.get("c", 0)),
        dead=int(h.get("x", 0)),
        cancelled=int(h.get("k", 0)),
        failed_chunks=sorted(int(i) for i in failed),
        cancel_requested=h.get("cr") in (b"1", "1"),
        finished_ms=opt_int("fm"),
        outcome=None if "o" not in h else _text(h["o"]),
        follow_up_id=None if "f" not in h else _text(h["f"]),
    )


class RedisBatches(RedisPlumbing):
    """Mixin of :class:`~shigoto.backends.redis.RedisBackend`."""

    def _batch_keys(self, queue: str, batch_id: str) -> _BatchKeys:
        return _BatchKeys(self.prefix, queue, batch_id)

    async def create_batch(self, batch: BatchRecord) -> None:
        k = self._batch_keys(batch.queue, batch.id)
        await self._register(batch.queue)
        await self._run(
            "batch_create",
            (k.batch, k.index, k.open),
            (batch.id, batch.name, batch.created_ms, batch.definition),
        )

    async def expect_batch_chunks(
        self, queue: str, batch_id: str, first_index: int, count: int
    ) -> None:
        k = self._batch_keys(queue, batch_id)
        for start in range(first_index, first_index + count, EXPECT_STEP):
            stop = min(start + EXPECT_STEP, first_index + count)
            await self._call("SADD", k.pending, *range(start, stop))

    async def seal_batch(
        self, queue: str, batch_id: str, *, total_chunks: int, total_items: int, now_ms: int
    ) -> BatchRecord | None:
        k = self._batch_keys(queue, batch_id)
        reply = await self._run(
            "batch_seal", (k.batch, k.failed), (total_chunks, total_items, now_ms)
        )
        return _decode(queue, reply)

    async def record_batch_chunks(
        self,
        queue: str,
        batch_id: str,
        chunks: Sequence[tuple[int, JobState]],
        *,
        now_ms: int,
    ) -> BatchRecord | None:
        k = self._batch_keys(queue, batch_id)
        reply: Any = None
        for part in split(list(chunks), MAX_BATCH) if chunks else [()]:
            args: list[Any] = [now_ms]
            for idx, state in part:
                args += [idx, JobState(state).value]
            reply = await self._run("batch_record", (k.batch, k.pending, k.failed), args)
        return _decode(queue, reply)

    async def reconcile_batch(
        self, queue: str, batch_id: str, *, now_ms: int, limit: int = 1000
    ) -> BatchRecord | None:
        k = self._batch_keys(queue, batch_id)
        jobs = queue_keys(self.prefix, queue).jobs
        reply = await self._run(
            "batch_reconcile",
            (k.batch, k.pending, k.failed, jobs),
            (now_ms, max(1, min(limit, MAX_BATCH)), batch_id),
        )
        return _decode(queue, reply)

    async def pending_batch_chunks(
        self, queue: str, batch_id: str, *, limit: int = 1000
    ) -> list[int]:
        k = self._batch_keys(queue, batch_id)
        members = await self._call("SRANDMEMBER", k.pending, max(1, limit))
        return sorted(int(m) for m in members or ())

    async def finish_batch(
        self,
        queue: str,
        batch_id: str,
        *,
        outcome: str,
        follow_up: NewJob | None,
        now_ms: int,
    ) -> bool:
        k = self._batch_keys(queue, batch_id)
        q = queue_keys(self.prefix, queue)
        job_args: tuple[Any, ...] = (
            ("",) if follow_up is None else (follow_up.id, *job_values(follow_up, now_ms))
        )
        done = await self._run(
            "batch_finish",
            (
                q.meta,
                q.wait,
                q.delayed,
                q.jobs,
                q.data,
                q.marker,
                q.dedup,
                q.dedup_check,
                k.batch,
                k.open,
            ),
            (batch_id, now_ms, outcome, *job_args),
        )
        return bool(done == 1)

    async def get_batch(self, queue: str, batch_id: str) -> BatchRecord | None:
        k = self._batch_keys(queue, batch_id)
        return _decode(queue, await self._run("batch_get", (k.batch, k.failed), ()))

    async def list_batches(
        self, queue: str, *, unfinished: bool = False, limit: int = 100
    ) -> list[BatchRecord]:
        k = self._batch_keys(queue, "-")
        ids = await self._call("ZREVRANGE", k.open if unfinished else k.index, 0, limit - 1)
        found = [await self.get_batch(queue, _text(i)) for i in ids]
        return [batch for batch in found if batch is not None]

    async def cancel_batch(self, queue: str, batch_id: str, *, now_ms: int) -> BatchRecord | None:
        k = self._batch_keys(queue, batch_id)
        return _decode(queue, await self._run("batch_cancel", (k.batch, k.failed), (now_ms,)))
