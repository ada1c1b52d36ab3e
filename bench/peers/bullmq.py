"""bullmq (the Python package): ``addBulk``, a ``Worker`` run by ``python -m peers.bullmq``."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from bullmq import Queue, Worker

from .common import NS, PYTHON, REDIS_URL, concurrency, record

CONCURRENCY = concurrency(50)  # Worker(opts={"concurrency": ...}), default 1
ENQUEUE = "queue.addBulk"
KEYS = [f"bull:{NS}:*"]
queue = Queue(NS, {"connection": REDIS_URL})


async def noop(job: Any, token: str) -> None:
    record(job.data["sent_ns"])


async def connect() -> None:
    await queue.getJobCounts()


async def enqueue_many(n: int) -> None:
    await queue.addBulk([{"name": "noop", "data": {"sent_ns": 0}} for _ in range(n)])


async def enqueue_one(sent_ns: int) -> None:
    await queue.add("noop", {"sent_ns": sent_ns})


def worker_argv() -> list[str]:
    return [PYTHON, "-m", "peers.bullmq"]


async def close() -> None:
    await queue.close()


async def run_worker() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    worker = Worker(NS, noop, {"connection": REDIS_URL, "concurrency": CONCURRENCY})
    await stop.wait()
    await worker.close()


if __name__ == "__main__":
    asyncio.run(run_worker())
