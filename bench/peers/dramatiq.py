"""dramatiq (Redis broker): ``send`` in a loop, ``dramatiq`` CLI with one process."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from .common import BIN, NS, REDIS_URL, concurrency, record

CONCURRENCY = concurrency(16)  # --threads (default 8)
ENQUEUE = "actor.send loop"
KEYS = [f"{NS}*"]
broker = RedisBroker(url=REDIS_URL, namespace=NS)
dramatiq.set_broker(broker)


@dramatiq.actor
def noop(sent_ns: int) -> None:
    record(sent_ns)


async def connect() -> None:
    broker.client.ping()


async def enqueue_many(n: int) -> None:
    for _ in range(n):
        noop.send(0)


async def enqueue_one(sent_ns: int) -> None:
    noop.send(sent_ns)


def worker_argv() -> list[str]:
    threads = str(CONCURRENCY)
    return [str(BIN / "dramatiq"), "peers.dramatiq", "--processes", "1", "--threads", threads]


async def close() -> None:
    broker.close()
