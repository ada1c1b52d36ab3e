"""Concurrent single adds written together (a group commit for ``Queue.add``).

A web app enqueues one job per request, from many requests at once. Written one by
one, each ``add`` pays a round trip for the job and another for its audit entry, and
on a small machine the socket writes and wake-ups of those round trips cost more than
everything else an add does. So adds of one queue that arrive while a write is in
flight wait for it to finish and then go together: one ``enqueue`` call and one audit
append for all of them.

Nothing is traded for it: an add returns only once its own job (and audit entry) is
stored, exactly as before; an add with nothing in flight is written at once (on the
next turn of the event loop); jobs of one batch are stored in the order they were
added, and a batch is one backend ``enqueue`` call, whose semantics (dedup keys
included, evaluated job by job) are those of the same adds made one after another.
A failed write fails every add of its batch with the same error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .backends.contract import Enqueued, NewJob

MAX_BATCH = 1000
"""Most jobs written by one call (what one backend script call takes)."""

Store = Callable[[list[NewJob]], Awaitable[list[Enqueued]]]


class AddCoalescer:
    """The pending adds of one queue on one backend (so, one event loop)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[tuple[NewJob, asyncio.Future[Enqueued]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, job: NewJob) -> Enqueued:
        """Store ``job`` with whatever else is pending; its outcome."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Enqueued] = loop.create_future()
        self._pending.append((job, outcome))
        if self._writer is None:
            self._writer = loop.create_task(self._write())
        return await outcome

    async def _write(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                try:
                    done = await self._store([job for job, _ in batch])
                except asyncio.CancelledError:
                    for _, outcome in batch:
                        outcome.cancel()
                    raise
                except BaseException as exc:
                    for _, outcome in batch:
                        if not outcome.done():
                            outcome.set_exception(exc)
                    continue
                for (_, outcome), result in zip(batch, done, strict=True):
                    if not outcome.done():  # its caller may have given up (cancelled)
                        outcome.set_result(result)
        finally:
            self._writer = None
            for _, outcome in self._pending:  # only left behind when cancelled
                outcome.cancel()
            self._pending.clear()
