"""The one sync facade: blocking calls run on a private event-loop thread.

Sync code (Django views, Flask, scripts) calls ``queue.add_sync(...)``; the coroutine
runs on a single background loop owned by the App, with its own backend connection.
Every ``*_sync`` method is a one-line delegation to this portal, so there is exactly one
implementation of each operation.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from . import eventloop
from .errors import ShigotoError

P = ParamSpec("P")
T = TypeVar("T")


class Portal:
    def __init__(self, name: str = "shigoto-portal") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = eventloop.new_event_loop()  # uvloop when installed
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the portal loop and block for its result."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise ShigotoError(
                f"{getattr(fn, '__qualname__', fn)}_sync was called inside a running event "
                "loop; use the async method with await instead"
            )
        loop = self._ensure()

        async def run() -> T:
            return await fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    def close(self, finalizer: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Run ``finalizer`` on the portal loop (e.g. close its backend) and stop it."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if finalizer is not None:

            async def final() -> None:
                await finalizer()

            asyncio.run_coroutine_threadsafe(final(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
