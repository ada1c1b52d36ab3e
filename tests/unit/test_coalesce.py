"""Concurrent adds are written together: one store call for the adds that arrive while
another is in flight, each add still answered with its own outcome, in order."""

from __future__ import annotations

import asyncio

import pytest

from shigoto.backends.contract import Enqueued, NewJob
from shigoto.coalesce import MAX_BATCH, AddCoalescer
from shigoto.job import JobOptions, JobState


def job(n: int) -> NewJob:
    return NewJob(
        id=f"j{n}",
        queue="q",
        name="task",
        payload=b"{}",
        options=JobOptions(),
        created_ms=0,
        ready_ms=0,
    )


class Store:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    async def __call__(self, jobs: list[NewJob]) -> list[Enqueued]:
        self.calls.append([j.id for j in jobs])
        await asyncio.sleep(0.01)  # a round trip, during which more adds arrive
        if self.fail is not None:
            raise self.fail
        return [Enqueued(id=j.id, created=True, state=JobState.WAITING) for j in jobs]


async def test_a_lone_add_is_written_at_once() -> None:
    store = Store()
    done = await AddCoalescer(store).add(job(1))
    assert done.id == "j1" and done.created
    assert store.calls == [["j1"]]


async def test_adds_arriving_during_a_write_go_together_in_order() -> None:
    store = Store()
    coalescer = AddCoalescer(store)

    results = await asyncio.gather(*(coalescer.add(job(n)) for n in range(10)))

    assert [r.id for r in results] == [f"j{n}" for n in range(10)]
    assert store.calls == [[f"j{n}" for n in range(10)]]  # all arrived in one turn

    first = asyncio.ensure_future(coalescer.add(job(100)))
    await asyncio.sleep(0)  # its write is now in flight
    later = [asyncio.ensure_future(coalescer.add(job(n))) for n in (101, 102)]
    await asyncio.gather(first, *later)
    assert store.calls[1:] == [["j100"], ["j101", "j102"]]


async def test_batches_are_capped() -> None:
    store = Store()
    coalescer = AddCoalescer(store)
    await asyncio.gather(*(coalescer.add(job(n)) for n in range(MAX_BATCH + 5)))
    assert [len(c) for c in store.calls] == [MAX_BATCH, 5]


async def test_a_failed_write_fails_every_add_of_its_batch_and_the_next_one_runs() -> None:
    store = Store(fail=ConnectionError("down"))
    coalescer = AddCoalescer(store)
    outcomes = await asyncio.gather(
        *(coalescer.add(job(n)) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, ConnectionError) for o in outcomes)

    store.fail = None
    assert (await coalescer.add(job(9))).id == "j9"


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    store = Store()
    coalescer = AddCoalescer(store)
    gone = asyncio.ensure_future(coalescer.add(job(1)))
    kept = asyncio.ensure_future(coalescer.add(job(2)))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await kept).id == "j2"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert store.calls == [["j1", "j2"]]  # the job itself may still be stored
