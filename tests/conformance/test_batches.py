"""Batches: chunks count once, and a batch finishes (and stores its follow-up) once.

``finish_batch`` is the whole exactly-once guarantee of the follow-up job: of any number
of callers racing on a complete batch, exactly one stores the follow-up, even after that
job was completed and removed.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shigoto.backends import Backend, open_backend
from shigoto.backends.contract import BatchRecord, NewJob
from shigoto.job import REMOVE_ALL, JobState

from .support import T0, claim_one, completion, enqueue, new_job, record


@pytest.fixture
def bat(backend: Backend) -> Backend:
    """The backend, when it implements the contract's batches section."""
    if not hasattr(backend, "finish_batch"):
        pytest.skip(f"batches not implemented on {backend.capabilities.name} yet")
    return backend


def batch_id() -> str:
    return "batch-" + uuid.uuid4().hex[:24]


async def new_batch(
    backend: Backend, queue: str, chunks: int, *, seal: bool = True, created: int = T0
) -> str:
    """A batch with ``chunks`` chunk jobs enqueued (ids ``{batch}:{i}``)."""
    bid = batch_id()
    await backend.create_batch(
        BatchRecord(id=bid, queue=queue, name="chunk", created_ms=created, definition=b"{}")
    )
    await backend.expect_batch_chunks(queue, bid, 0, chunks)
    if chunks:
        await enqueue(backend, *(new_job(queue, f"{bid}:{i}", name="chunk") for i in range(chunks)))
    if seal:
        await backend.seal_batch(
            queue, bid, total_chunks=chunks, total_items=chunks * 10, now_ms=T0 + 1
        )
    return bid


def follow_up(queue: str, bid: str, **options: object) -> NewJob:
    return new_job(queue, f"{bid}:follow-up", name="after", data={"done": True}, **options)


async def test_a_new_batch_is_unsealed_with_zero_counts(bat: Backend, queue_name: str) -> None:
    bid = await new_batch(bat, queue_name, 3, seal=False)
    batch = await bat.get_batch(queue_name, bid)
    assert batch is not None
    assert (batch.total_chunks, batch.finals, batch.finished_ms) == (None, 0, None)
    assert batch.definition == b"{}" and batch.name == "chunk" and not batch.all_final
    assert sorted(await bat.pending_batch_chunks(queue_name, bid)) == [0, 1, 2]
    assert await bat.get_batch(queue_name, batch_id()) is None


async def test_sealing_records_the_totals(bat: Backend, queue_name: str) -> None:
    bid = await new_batch(bat, queue_name, 4)
    batch = await bat.get_batch(queue_name, bid)
    assert batch is not None
    assert (batch.total_chunks, batch.total_items) == (4, 40)


async def test_each_chunk_counts_once_whatever_its_final_state(
    bat: Backend, queue_name: str
) -> None:
    bid = await new_batch(bat, queue_name, 4)
    done = [(0, JobState.COMPLETED), (1, JobState.DEAD), (2, JobState.CANCELLED)]
    after = await bat.record_batch_chunks(queue_name, bid, done, now_ms=T0 + 5)
    again = await bat.record_batch_chunks(queue_name, bid, done, now_ms=T0 + 6)

    assert after is not None and again is not None
    assert (again.completed, again.dead, again.cancelled) == (1, 1, 1)
    assert again.failed_chunks == [1, 2]
    assert not again.all_final
    assert await bat.pending_batch_chunks(queue_name, bid) == [3]


async def test_a_chunk_never_expected_is_ignored(bat: Backend, queue_name: str) -> None:
    bid = await new_batch(bat, queue_name, 1)
    batch = await bat.record_batch_chunks(queue_name, bid, [(7, JobState.COMPLETED)], now_ms=T0 + 5)
    assert batch is not None and batch.finals == 0


async def test_finish_stores_the_follow_up_once(bat: Backend, queue_name: str) -> None:
    bid = await new_batch(bat, queue_name, 2)
    job = follow_up(queue_name, bid)
    assert not await bat.finish_batch(
        queue_name, bid, outcome="completed", follow_up=job, now_ms=T0
    )

    await bat.record_batch_chunks(
        queue_name, bid, [(0, JobState.COMPLETED), (1, JobState.COMPLETED)], now_ms=T0 + 5
    )
    assert await bat.finish_batch(
        queue_name, bid, outcome="completed", follow_up=job, now_ms=T0 + 6
    )
    assert not await bat.finish_batch(
        queue_name, bid, outcome="completed", follow_up=job, now_ms=T0 + 7
    )

    stored = await record(bat, queue_name, job.id)
    assert (stored.state, stored.name, stored.data) == (JobState.WAITING, "after", {"done": True})
    batch = await bat.get_batch(queue_name, bid)
    assert batch is not None
    assert (batch.finished_ms, batch.outcome, batch.follow_up_id) == (T0 + 6, "completed", job.id)
    assert [b.id for b in await bat.list_batches(queue_name, unfinished=True)] == []


async def test_an_unsealed_batch_does_not_finish(bat: Backend, queue_name: str) -> None:
    bid = await new_batch(bat, queue_name, 1, seal=False)
    await bat.record_batch_chunks(queue_name, bid, [(0, JobState.COMPLETED)], now_ms=T0 + 5)
    assert not await bat.finish_batch(
        queue_name, bid, outcome="completed", follow_up=None, now_ms=T0 + 6
    )


async def test_an_empty_sealed_batch_finishes_without_a_follow_up(
    bat: Backend, queue_name: str
) -> None:
    bid = await new_batch(bat, queue_name, 0)
    assert await bat.finish_batch(queue_name, bid, outcome="completed", follow_up=None, now_ms=T0)
    batch = await bat.get_batch(queue_name, bid)
    assert batch is not None and batch.follow_up_id is None and batch.outcome == "completed"


async def test_the_follow_up_is_not_stored_again_after_it_was_completed_and_removed(
    bat: Backend, queue_name: str
) -> None:
    bid = await new_batch(bat, queue_name, 1)
    await bat.record_batch_chunks(queue_name, bid, [(0, JobState.COMPLETED)], now_ms=T0 + 1)
    job = follow_up(queue_name, bid, remove_on_complete=REMOVE_ALL)
    assert await bat.finish_batch(queue_name, bid, outcome="completed", follow_up=job, now_ms=T0)

    chunk = await claim_one(bat, queue_name)  # the chunk job itself, never completed
    assert chunk.record.id == f"{bid}:0"
    after = await claim_one(bat, queue_name)
    assert after.record.id == job.id
    assert await bat.complete([completion(after)], T0 + 2) == [True]
    assert await bat.get(queue_name, job.id) is None

    assert not await bat.finish_batch(
        queue_name, bid, outcome="completed", follow_up=job, now_ms=T0 + 3
    )
    assert await bat.get(queue_name, job.id) is None


async def test_two_connections_finishing_at_the_same_instant_store_one_follow_up(
    bat: Backend, backend_url: str, queue_name: str
) -> None:
    other = open_backend(backend_url)
    await other.connect()
    try:
        for _ in range(5):
            bid = await new_batch(bat, queue_name, 2)
            job = follow_up(queue_name, bid)
            # each "worker" reports its own last chunk, then tries to finish
            records = await asyncio.gather(
                bat.record_batch_chunks(queue_name, bid, [(0, JobState.COMPLETED)], now_ms=T0 + 5),
                other.record_batch_chunks(
                    queue_name, bid, [(1, JobState.COMPLETED)], now_ms=T0 + 5
                ),
            )
            assert [r is not None for r in records] == [True, True]
            wins = await asyncio.gather(
                *(
                    b.finish_batch(queue_name, bid, outcome="completed", follow_up=job, now_ms=T0)
                    for b in (bat, other, bat, other)
                )
            )
            assert sorted(wins) == [False, False, False, True]
            assert (await record(bat, queue_name, job.id)).state is JobState.WAITING
    finally:
        await other.close()


async def test_reconcile_counts_chunks_whose_report_was_lost(bat: Backend, queue_name: str) -> None:
    bid = await new_batch(bat, queue_name, 3)
    # chunk 0 completes, chunk 1 is cancelled: nobody reports either
    first = await claim_one(bat, queue_name)
    assert await bat.complete([completion(first)], T0 + 1) == [True]
    assert await bat.cancel(queue_name, f"{bid}:1", now_ms=T0 + 1) is JobState.CANCELLED

    batch = await bat.reconcile_batch(queue_name, bid, now_ms=T0 + 2)
    assert batch is not None
    assert (batch.completed, batch.cancelled, batch.failed_chunks) == (1, 1, [1])
    assert await bat.pending_batch_chunks(queue_name, bid) == [2]
    assert batch.updated_ms == T0 + 2


async def test_reconcile_counts_a_chunk_job_no_longer_stored_as_completed(
    bat: Backend, queue_name: str
) -> None:
    bid = batch_id()
    await bat.create_batch(
        BatchRecord(id=bid, queue=queue_name, name="chunk", created_ms=T0, definition=b"{}")
    )
    await bat.expect_batch_chunks(queue_name, bid, 0, 1)  # its job was never stored
    await bat.seal_batch(queue_name, bid, total_chunks=1, total_items=1, now_ms=T0)
    batch = await bat.reconcile_batch(queue_name, bid, now_ms=T0 + 1)
    assert batch is not None and batch.completed == 1 and batch.all_final


async def test_cancel_sets_the_flag(bat: Backend, queue_name: str) -> None:
    bid = await new_batch(bat, queue_name, 1)
    batch = await bat.cancel_batch(queue_name, bid, now_ms=T0 + 9)
    assert batch is not None and batch.cancel_requested and batch.updated_ms == T0 + 9
    assert await bat.cancel_batch(queue_name, batch_id(), now_ms=T0) is None


async def test_batches_are_listed_newest_first(bat: Backend, queue_name: str) -> None:
    older = await new_batch(bat, queue_name, 0, created=T0)
    newer = await new_batch(bat, queue_name, 1, created=T0 + 10)
    assert [b.id for b in await bat.list_batches(queue_name)] == [newer, older]
    await bat.finish_batch(queue_name, older, outcome="completed", follow_up=None, now_ms=T0)
    assert [b.id for b in await bat.list_batches(queue_name, unfinished=True)] == [newer]
    assert [b.id for b in await bat.list_batches(queue_name, limit=1)] == [newer]
