"""Several waits at once, until the first of them ends.

A worker idle on more than one source of wake-ups — one blocking wait per Redis Cluster
node, or a RabbitMQ consumer beside a record store's sleep until a rate-limit slot —
waits on all of them and goes on as soon as one returns. The others are cancelled and
reaped before it goes on, so none keeps running (or holds a connection) behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def first_done(*waits: Awaitable[Any]) -> None:
    """Await ``waits`` together until one ends; cancel the rest. An error raised by one
    that ended is raised here."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()
