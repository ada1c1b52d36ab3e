"""The SQLite backend's connection: one thread owns it, and what arrives together goes
there together.

Why it is built this way:

* sqlite3 objects are not shareable across threads, and a slow disk or a lock held by
  another process must not block the event loop: every statement runs on one thread.
* **A trip to that thread is expensive**: two cross-thread wake-ups (the executor's
  queue, then the event loop's self-pipe), about as much as the SQL of a small batch
  on a busy 2-core machine. A worker that has just finished a batch of jobs asks for
  their completions and for its next claim in the same event-loop turn, and a busy
  process keeps asking while the thread works. So calls are queued, and everything
  queued goes in **one trip**: when the event loop turn ends, or, while a trip is out,
  as soon as it returns.
* **Writes that travel together share one ``BEGIN IMMEDIATE … COMMIT``** (group
  commit: one WAL append and one lock acquisition instead of one per call). Each runs
  inside its own ``SAVEPOINT``, so one that raises is undone alone and the others
  still commit; each is as atomic as it was in a transaction of its own, and nothing is
  acknowledged before the ``COMMIT`` that makes it durable. Reads run between them in
  submission order, outside any write transaction (WAL: they never wait for a writer).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

_write_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
"""One per database file: connections of one process (a worker's own, its heartbeat's,
its audit writer's) take turns on it instead of in SQLite's busy handler, which sleeps
1, 2, 5 … ms between attempts. Other processes still meet ``busy_timeout``."""


class _Call:
    __slots__ = ("fn", "future", "write")

    def __init__(self, fn: Op, future: asyncio.Future[Any], write: bool) -> None:
        self.fn = fn
        self.future = future
        self.write = write


class _Queue:
    """The calls one event loop has submitted and not yet sent, and whether a trip of
    its calls is out (then the next trip leaves when that one returns)."""

    __slots__ = ("calls", "in_flight")

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self.in_flight = False


class SerialConnection:
    """A connection whose calls run on one thread, in submission order.

    Atomicity: a ``write`` call runs in a write transaction (its own savepoint inside
    one ``BEGIN IMMEDIATE`` shared with the writes submitted alongside it); a read runs
    in autocommit mode. Usable from several event loops: each batches its own calls.
    """

    def __init__(self, path: str, opener: Callable[[], sqlite3.Connection]) -> None:
        self._opener = opener
        self._lock = _write_locks[path]
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._queues: dict[asyncio.AbstractEventLoop, _Queue] = {}

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def open(self) -> None:
        if self._conn is not None:
            return
        executor = ThreadPoolExecutor(1, thread_name_prefix="shigoto-sqlite")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, self._opener)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        if self._conn is not None:  # a concurrent open won
            executor.submit(conn.close)
            executor.shutdown(wait=False)
            return
        self._executor, self._conn = executor, conn

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``fn(connection)`` on the connection's thread (see the class doc)."""
        if self._conn is None:
            await self.open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        queue.calls.append(_Call(fn, future, write))
        if not queue.in_flight:
            queue.in_flight = True
            loop.call_soon(self._send, loop, queue)  # after this turn: what it adds joins
        return await future

    async def close(self) -> None:
        """Close after every call already submitted from this loop has run."""
        if self._conn is None:
            return
        executor = self._executor
        try:
            await self.call(lambda conn: conn.close(), write=False)
        finally:
            self._conn = self._executor = None
            if executor is not None:
                executor.shutdown(wait=False)

    def _send(self, loop: asyncio.AbstractEventLoop, queue: _Queue) -> None:
        calls = [c for c in queue.calls if not c.future.cancelled()]
        queue.calls = []
        if not calls:
            queue.in_flight = False
            del self._queues[loop]
            return
        try:
            if self._executor is None or self._conn is None:
                raise sqlite3.ProgrammingError("the SQLite backend was closed")
            trip = self._executor.submit(_run_trip, self._conn, self._lock, calls)
        except Exception as exc:
            self._settle(loop, queue, calls, [(False, exc)] * len(calls))
            return
        asyncio.wrap_future(trip, loop=loop).add_done_callback(
            lambda done: self._settle(loop, queue, calls, _outcomes(done, len(calls)))
        )

    def _settle(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: _Queue,
        calls: list[_Call],
        outcomes: list[tuple[bool, Any]],
    ) -> None:
        for call, (ok, value) in zip(calls, outcomes, strict=True):
            if call.future.cancelled():
                continue
            if ok:
                call.future.set_result(value)
            else:
                call.future.set_exception(value)
        # What queued up while this trip was out leaves after this turn, so that calls
        # the callers just woken make at once (a worker's next completions, after its
        # claim returned) ride along instead of waiting for a trip of their own.
        loop.call_soon(self._send, loop, queue)


def _outcomes(done: asyncio.Future[list[tuple[bool, Any]]], n: int) -> list[tuple[bool, Any]]:
    if done.cancelled():
        return [(False, asyncio.CancelledError())] * n
    error = done.exception()
    if error is not None:
        return [(False, error)] * n
    return done.result()


# -- on the connection's thread -----------------------------------------------------------


def _run_trip(
    conn: sqlite3.Connection, lock: threading.Lock, calls: list[_Call]
) -> list[tuple[bool, Any]]:
    """Run one trip's calls in order: consecutive writes as one transaction."""
    outcomes: list[tuple[bool, Any]] = []
    start = 0
    while start < len(calls):
        if not calls[start].write:
            outcomes.append(_attempt(calls[start].fn, conn))
            start += 1
            continue
        end = start
        while end < len(calls) and calls[end].write:
            end += 1
        outcomes += _write_group(conn, lock, [c.fn for c in calls[start:end]])
        start = end
    return outcomes


def _attempt(fn: Op, conn: sqlite3.Connection) -> tuple[bool, Any]:
    try:
        return True, fn(conn)
    except Exception as exc:
        return False, exc


def _write_group(
    conn: sqlite3.Connection, lock: threading.Lock, fns: list[Op]
) -> list[tuple[bool, Any]]:
    """One ``BEGIN IMMEDIATE … COMMIT`` for ``fns``, each in a savepoint of its own.

    If the transaction itself fails (``BEGIN`` or ``COMMIT`` raise, or SQLite rolled
    it back after an error such as a full disk), every call of the group fails with
    that error: none of their changes were committed."""
    single = len(fns) == 1
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes: list[tuple[bool, Any]] = []
            for fn in fns:
                if single:
                    outcomes.append((True, fn(conn)))
                    continue
                conn.execute("SAVEPOINT call")
                try:
                    value = fn(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        raise  # SQLite undid the whole transaction: nobody's write stands
                    conn.execute("ROLLBACK TO call")
                    conn.execute("RELEASE call")
                    outcomes.append((False, exc))
                else:
                    conn.execute("RELEASE call")
                    outcomes.append((True, value))
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, Exception):
                return [(False, exc)] * len(fns)
            raise
    return outcomes
