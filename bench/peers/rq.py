"""rq: ``Queue.enqueue_many`` (one pipeline), ``rq worker`` with SimpleWorker (no fork)."""

from __future__ import annotations

from redis import Redis
from rq import Queue

from .common import BIN, NS, REDIS_URL, record

CONCURRENCY = 1  # a SimpleWorker runs one job at a time, in its own process
ENQUEUE = "enqueue_many"
KEYS = ["rq:*"]
connection = Redis.from_url(REDIS_URL)
queue = Queue(NS, connection=connection)


def noop(sent_ns: int) -> None:
    record(sent_ns)


async def connect() -> None:
    connection.ping()


async def enqueue_many(n: int) -> None:
    queue.enqueue_many([Queue.prepare_data(noop, args=(0,)) for _ in range(n)])


async def enqueue_one(sent_ns: int) -> None:
    queue.enqueue(noop, sent_ns)


def worker_argv() -> list[str]:
    worker = "rq.worker.SimpleWorker"
    return [str(BIN / "rq"), "worker", "-q", "-w", worker, "-u", REDIS_URL, NS]


async def close() -> None:
    connection.close()
