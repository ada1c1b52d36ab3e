"""Process isolation: ``@app.job(isolation="process")`` runs a handler in a pooled child.

Why: a CPU-bound handler (image resizing, a big CSV) run in the worker's thread pool
still holds the GIL and slows the event loop; a handler stuck in C code cannot be
interrupted by a timeout; a handler that segfaults takes the whole worker with it. In a
child process none of that reaches the worker: the job's timeout kills the child
(SIGKILL), a crash is reported as ``crashed: signal 11 (SIGSEGV)`` or ``crashed: exit
code 1``, and the job is retried or dead-lettered like any failure while the worker
keeps serving.

How:

* A :class:`ProcessPool` per worker holds up to ``concurrency`` children, started on
  demand and reused from job to job; a child that was killed or crashed is replaced.
  Children come from multiprocessing's ``forkserver`` (``spawn`` where there is none):
  never a fork of the worker itself, with its threads and open sockets.
* A child finds the handler by module and name, as :mod:`multiprocessing` does: the
  function must be defined at module level (checked at registration).
* Parent and child talk over a private pipe. Job data goes in (already decoded and
  validated by the parent), and progress updates (``ctx.update_progress``),
  ``ctx.extend_lock`` requests, then the JSON-encoded result or the exception (with
  the child's traceback attached) come back. The pipe uses pickle, as every
  :mod:`multiprocessing` pipe does; it connects a worker to its own child only and
  never carries anything from the queue that was not already decoded as JSON.
* Leases are renewed by the worker's heartbeat thread, which a busy child cannot starve.

Not available in a child: ``ctx.once`` (run the side effect in a normal handler) and
cancellation flags (``ctx.cancelled`` stays False; cancelling the job after it started
takes effect when it ends). A child ignores SIGINT/SIGTERM (the worker decides when it
dies) and exits on its own when the worker disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import ConfigurationError, ShigotoError

if TYPE_CHECKING:
    from .context import JobContext
    from .handler import JobHandler

log = logging.getLogger(__name__)

ISOLATION_MODES = frozenset({"process"})
ORPHAN_CHECK_S = 1.0


class ProcessCrashed(ShigotoError):
    """The child process running the handler died (signal or ``os._exit``)."""


class RemoteError(Exception):
    """A handler exception that could not be pickled back from its child process; its
    ``error_type`` names the original class."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type


class _RemoteTraceback(Exception):
    """Carries the child's traceback text as the ``__cause__`` of a re-raised error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def check_isolation(isolation: Any, fn: Any, name: str) -> str | None:
    """Validate ``@app.job(isolation=...)`` for the function ``fn`` of job ``name``."""
    if isolation is None:
        return None
    if isolation not in ISOLATION_MODES:
        raise ConfigurationError(
            f"job {name!r}: isolation must be None or 'process', got {isolation!r}"
        )
    qualname = getattr(fn, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname or not getattr(fn, "__module__", None):
        raise ConfigurationError(
            f"job {name!r}: isolation='process' needs a function defined at module level "
            f"(a child process imports it by name), got {qualname or fn!r}"
        )
    return str(isolation)


def describe_death(exitcode: int | None) -> str:
    """``crashed: signal 11 (SIGSEGV)`` / ``crashed: exit code 1``."""
    if exitcode is None:
        return "crashed: process vanished"
    if exitcode < 0:
        try:
            return f"crashed: signal {-exitcode} ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"crashed: signal {-exitcode}"
    return f"crashed: exit code {exitcode}"


class _Child:
    __slots__ = ("conn", "jobs", "process")

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.jobs = 0


class ProcessPool:
    """Up to ``size`` child processes running isolated handlers for one worker."""

    def __init__(self, size: int, *, worker_id: str) -> None:
        if size < 1:
            raise ConfigurationError(f"process pool size must be >= 1, got {size}")
        self.size = size
        self.worker_id = worker_id
        self.started = 0
        self._mp = _start_context()
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._live = 0
        self._freed = asyncio.Condition()
        self._closed = False

    async def run(self, handler: JobHandler[Any], ctx: JobContext, data: dict[str, Any]) -> Any:
        """Run ``handler`` for one job in a child; cancel (timeout, shutdown) kills it."""
        if handler._models:
            data = handler._rebuild_models(data)
        child = await self._acquire()
        self._busy.add(child)
        finished = False
        try:
            fn = handler.fn
            info = {
                "job": ctx.job,
                "worker_id": ctx.worker_id,
                "is_async": handler.is_async,
            }
            try:
                child.conn.send(("run", fn.__module__, fn.__qualname__, info, data))
            except OSError:  # the idle child died just now
                raise await self._crashed(child) from None
            while True:
                try:
                    message = await _receive(child.conn)
                except (EOFError, OSError):
                    raise await self._crashed(child) from None
                kind = message[0]
                if kind == "progress":
                    await _quietly(ctx.update_progress(message[1]), ctx, "progress update")
                elif kind == "extend":
                    await _quietly(ctx.extend_lock(message[1]), ctx, "lock extension")
                elif kind == "ok":
                    finished = True
                    return None if message[1] is None else msgspec.json.decode(message[1])
                else:
                    finished = True
                    raise _rebuild_error(message[1], message[2], message[3], message[4])
        finally:
            self._busy.discard(child)
            if finished:
                child.jobs += 1
                await self._release(child)
            else:
                self._discard(child)
                async with self._freed:
                    self._freed.notify()

    def pids(self) -> list[int]:
        """Process ids of the children, idle or running a job."""
        return [c.process.pid for c in [*self._idle, *self._busy] if c.process.pid is not None]

    async def close(self) -> None:
        """Stop every child (idle ones politely, busy ones are killed by their jobs)."""
        self._closed = True
        for child in self._idle:
            with contextlib.suppress(OSError):
                child.conn.send(None)
        idle, self._idle = self._idle, []
        await asyncio.to_thread(_reap, [c.process for c in idle], 2.0)

    # -- internals ---------------------------------------------------------------------

    async def _acquire(self) -> _Child:
        async with self._freed:
            while True:
                while self._idle:
                    child = self._idle.pop()
                    if child.process.is_alive():
                        return child
                    self._discard(child)
                if self._live < self.size:
                    self._live += 1
                    break
                await self._freed.wait()
        spawning = asyncio.get_running_loop().run_in_executor(None, self._spawn)
        try:
            return await asyncio.shield(spawning)
        except asyncio.CancelledError:
            spawning.add_done_callback(self._discard_spawned)  # do not leak the child
            raise
        except BaseException:
            self._live -= 1
            raise

    def _discard_spawned(self, spawning: asyncio.Future[_Child]) -> None:
        if spawning.cancelled() or spawning.exception() is not None:
            self._live -= 1
        else:
            self._discard(spawning.result())

    def _spawn(self) -> _Child:
        parent_end, child_end = self._mp.Pipe()
        process = self._mp.Process(
            target=child_main,
            args=(child_end, os.getpid()),
            name=f"shigoto-isolated-{self.worker_id}",
            daemon=True,
        )
        process.start()
        child_end.close()
        self.started += 1
        log.debug("worker %s: started isolated process %s", self.worker_id, process.pid)
        return _Child(process, parent_end)

    async def _release(self, child: _Child) -> None:
        async with self._freed:
            if self._closed:
                self._discard(child)
            else:
                self._idle.append(child)
            self._freed.notify()

    def _discard(self, child: _Child) -> None:
        """Kill (if still running) and forget a child; reaped in the background."""
        self._live -= 1
        if child.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                child.process.kill()
        with contextlib.suppress(OSError):
            child.conn.close()
        threading.Thread(target=_reap, args=([child.process], 5.0), daemon=True).start()

    async def _crashed(self, child: _Child) -> ProcessCrashed:
        process = child.process
        await asyncio.to_thread(process.join, 5.0)
        reason = describe_death(process.exitcode)
        log.error(
            "worker %s: isolated process %s running a job died (%s); starting another",
            self.worker_id,
            process.pid,
            reason,
        )
        return ProcessCrashed(f"{reason}; the handler's process died while running the job")


def _start_context() -> Any:
    """``forkserver`` where available: children fork from a small, single-threaded server
    that has shigoto imported (fast to start, nothing inherited from the worker's threads
    and sockets, and the main script is not re-run); else ``spawn``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["shigoto.isolation"])
        return context
    return multiprocessing.get_context("spawn")


async def _receive(conn: Connection) -> Any:
    """The next message from a child, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    while not conn.poll():
        ready = loop.create_future()
        fd = conn.fileno()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
    return conn.recv()


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def _quietly(call: Any, ctx: JobContext, what: str) -> None:
    try:
        await call
    except Exception as exc:
        ctx.log.warning("%s from the isolated process failed: %s", what, exc)


def _rebuild_error(blob: bytes | None, error_type: str, message: str, tb: str) -> BaseException:
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = _unpickle_exception(blob)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(error_type, message)
    if isinstance(exc, SystemExit | KeyboardInterrupt | GeneratorExit):
        exc = RemoteError(error_type, message)  # must not stop the worker itself
    exc.__cause__ = _RemoteTraceback(tb)
    return exc


def _reap(processes: list[BaseProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)


# -- the child ------------------------------------------------------------------------------


class ProcessJobContext:
    """``ctx`` of a sync handler running in a child process (same names as the others)."""

    def __init__(self, conn: Connection, info: dict[str, Any]) -> None:
        from .job import JobRecord

        job: JobRecord = info["job"]
        self._conn = conn
        self.job = job
        self.job_id, self.name, self.queue = job.id, job.name, job.queue
        self.attempt = job.attempts
        self.actor = job.options.actor
        self.worker_id: str = info["worker_id"]
        self.cancelled = False
        self.batch = None
        self.log = logging.LoggerAdapter(
            logging.getLogger(f"shigoto.job.{job.name}"), {"job_id": job.id, "queue": job.queue}
        )

    @property
    def scheduled_at(self) -> Any:
        from .schedule import scheduled_at

        return scheduled_at(self.job_id)

    def update_progress(self, progress: Any) -> None:
        """Sent to the worker, which records it (validation errors are raised here)."""
        from .context import MAX_PROGRESS_BYTES
        from .errors import PayloadError

        if isinstance(progress, bool) or not isinstance(progress, int | float | dict | str):
            raise ConfigurationError(
                "progress must be a number, a string or a small dict, "
                f"got {type(progress).__name__}"
            )
        try:
            size = len(msgspec.json.encode(progress))
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"progress is not JSON-encodable: {exc}") from None
        if size > MAX_PROGRESS_BYTES:
            raise PayloadError(f"progress is {size} bytes; keep it under {MAX_PROGRESS_BYTES}")
        self._conn.send(("progress", progress))

    def extend_lock(self, duration: float | None = None) -> None:
        self._conn.send(("extend", duration))

    def raise_if_cancelled(self) -> None:
        """Cancellation does not reach isolated handlers (see the module docs)."""

    def once(self, *_args: Any, **_kwargs: Any) -> Any:
        raise NotImplementedError(
            "ctx.once is not available to isolation='process' handlers; run the side "
            "effect from a job without isolation"
        )


class AsyncProcessJobContext(ProcessJobContext):
    """``ctx`` of an async handler running in a child process."""

    async def update_progress(self, progress: Any) -> None:  # type: ignore[override]
        ProcessJobContext.update_progress(self, progress)

    async def extend_lock(self, duration: float | None = None) -> None:  # type: ignore[override]
        ProcessJobContext.extend_lock(self, duration)


def child_main(conn: Connection, parent_pid: int) -> None:
    """Entry point of a pool child: run jobs sent by the worker until told to stop."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    functions: dict[tuple[str, str], Any] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        _, module, qualname, info, data = message
        try:
            key = (module, qualname)
            fn = functions.get(key)
            if fn is None:
                fn = functions[key] = _resolve(module, qualname)
            if info["is_async"]:
                result = asyncio.run(fn(AsyncProcessJobContext(conn, info), **data))
            else:
                result = fn(ProcessJobContext(conn, info), **data)
            try:
                encoded = None if result is None else msgspec.json.encode(result)
            except (TypeError, ValueError, OverflowError) as exc:
                from .worker import BadPayload

                raise BadPayload(
                    f"the handler's return value is not JSON-encodable: {exc}"
                ) from None
            conn.send(("ok", encoded))
        except BaseException as exc:
            conn.send(("error", _pickled(exc), _type_name(exc), str(exc), traceback.format_exc()))


def _resolve(module: str, qualname: str) -> Any:
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return getattr(target, "fn", target)  # the JobHandler that @app.job left in its place


def _pickled(exc: BaseException) -> bytes | None:
    """The exception as (class, args, attributes): rebuilt without calling ``__init__``,
    whose signature often differs from ``args`` (``Retry(delay=5)``)."""
    try:
        blob = pickle.dumps((type(exc), exc.args, dict(getattr(exc, "__dict__", {}))))
        _unpickle_exception(blob)  # some pickle but cannot be rebuilt
    except Exception:
        return None
    return blob


def _unpickle_exception(blob: bytes) -> BaseException | None:
    cls, args, state = pickle.loads(blob)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return None
    exc: BaseException = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _exit_when_orphaned(worker_pid: int) -> None:
    """The worker is not necessarily our parent (forkserver), so probe its pid."""
    while True:
        time.sleep(ORPHAN_CHECK_S)
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass
