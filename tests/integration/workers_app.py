"""Handlers for the worker-process tests (supervisor and process isolation).

Module level on purpose: a supervised worker imports this app by ``module:attribute``, and
a process-isolated handler is imported by its module and name in the pool's children.
The URL comes from ``SHIGOTO_URL``, which each test points at its own SQLite file.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any

from shigoto import App

app = App()


@app.job(queue="procs")
def whoami(ctx: Any, n: int) -> int:
    """Which process ran the job (the supervisor tests count distinct pids)."""
    time.sleep(0.01)
    return os.getpid()


@app.job(queue="procs")
def linger(ctx: Any, seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


# -- process isolation: plain functions, registered by each test on its own app -----------


def crunch(ctx: Any, n: int) -> int:
    """CPU-bound: would block an event loop for as long as it runs."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def spin(ctx: Any) -> None:
    """Busy-loops forever: only killing its process stops it."""
    while True:
        pass


def hard_exit(ctx: Any) -> None:
    os._exit(1)


def segfault(ctx: Any) -> None:
    ctypes.string_at(0)


def report(ctx: Any, steps: int) -> str:
    for step in range(1, steps + 1):
        ctx.update_progress(round(100 * step / steps))
    return f"pid {os.getpid()} did {steps} steps"


async def async_report(ctx: Any, value: int) -> dict[str, int]:
    await ctx.update_progress({"value": value})
    return {"value": value * 2, "pid": os.getpid()}


def fail_once(ctx: Any) -> str:
    if ctx.attempt == 1:
        raise ValueError("first attempt fails")
    return "second attempt ok"


def ask_later(ctx: Any) -> str:
    if ctx.attempt == 1:
        from shigoto import Retry

        raise Retry(delay=0.01)
    return "retried"


def refuse(ctx: Any) -> None:
    from shigoto import UnrecoverableError

    raise UnrecoverableError("business rule says no")
