"""huey: ``task.map`` (enqueues each item), ``huey_consumer`` with worker threads.

RedisHuey, or SqliteHuey in ``--sqlite`` mode.
"""

from __future__ import annotations

from huey import RedisHuey, SqliteHuey

from .common import BIN, NS, REDIS_URL, SQLITE, concurrency, record

CONCURRENCY = concurrency(8)  # -k thread -w N (default 1)
ENQUEUE = "task.map"
KEYS = [f"huey.*{NS}*"]
huey = SqliteHuey(NS, filename=SQLITE) if SQLITE else RedisHuey(NS, url=REDIS_URL)


@huey.task()
def noop(sent_ns: int) -> None:
    record(sent_ns)


async def connect() -> None:
    huey.pending_count()


async def enqueue_many(n: int) -> None:
    noop.map([0] * n)


async def enqueue_one(sent_ns: int) -> None:
    noop(sent_ns)


def worker_argv() -> list[str]:
    threads = str(CONCURRENCY)
    return [str(BIN / "huey_consumer"), "peers.huey.huey", "-k", "thread", "-w", threads, "-q"]


async def close() -> None:
    pass
