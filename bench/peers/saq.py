"""saq: ``enqueue`` in a loop (``map`` also waits for results), the ``saq`` worker CLI."""

from __future__ import annotations

from typing import Any

from saq import Queue

from .common import BIN, NS, REDIS_URL, concurrency, record

CONCURRENCY = concurrency(10)  # Worker(concurrency=...), its default
ENQUEUE = "queue.enqueue loop"
KEYS = [f"saq:{NS}*", f"*{NS}*"]
queue = Queue.from_url(REDIS_URL, name=NS)


async def noop(ctx: Any, *, sent_ns: int) -> None:
    record(sent_ns)


settings = {"queue": queue, "functions": [noop], "concurrency": CONCURRENCY}


async def connect() -> None:
    await queue.connect()


async def enqueue_many(n: int) -> None:
    for _ in range(n):
        await queue.enqueue("noop", sent_ns=0)


async def enqueue_one(sent_ns: int) -> None:
    await queue.enqueue("noop", sent_ns=sent_ns)


def worker_argv() -> list[str]:
    return [str(BIN / "saq"), "peers.saq.settings"]


async def close() -> None:
    await queue.disconnect()
