"""The event loop shigoto's own processes run on: uvloop when it is installed.

``pip install 'shigoto[fast]'`` adds uvloop. Where shigoto creates a loop itself — the
``shigoto worker`` command, the sync portal behind ``add_sync`` and friends, the
heartbeat thread — it then uses uvloop, whose tasks, callbacks and sockets cost about
half of asyncio's: a no-op job spends most of its time in exactly those (figures in
``bench/README.md``, "Hot path"). Without uvloop nothing changes. ``SHIGOTO_LOOP=asyncio``
keeps the standard loop even when uvloop is installed (to compare, or to rule it out).

Code that runs a worker on a loop of its own (``asyncio.run(worker.run())``) chooses that
loop itself; :func:`run` is the same call with this choice made.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def uvloop_enabled() -> bool:
    """Whether uvloop is installed and not turned off with ``SHIGOTO_LOOP=asyncio``."""
    if os.environ.get("SHIGOTO_LOOP", "").lower() == "asyncio":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop when :func:`uvloop_enabled`."""
    if uvloop_enabled():
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop (for a thread of its own), uvloop's when :func:`uvloop_enabled`."""
    if uvloop_enabled():
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()
