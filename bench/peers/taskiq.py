"""taskiq with taskiq-redis's stream broker: ``kiq`` in a loop, ``taskiq worker``."""

from __future__ import annotations

from taskiq_redis import RedisStreamBroker

from .common import BIN, NS, REDIS_URL, concurrency, record

CONCURRENCY = concurrency(100)  # --max-async-tasks (its default)
ENQUEUE = "task.kiq loop"
KEYS = [f"{NS}*"]
# consumer_id="0": the group also sees messages added before the worker first started.
broker = RedisStreamBroker(REDIS_URL, queue_name=NS, consumer_group_name=NS, consumer_id="0")


@broker.task(task_name="noop")
async def noop(sent_ns: int) -> None:
    record(sent_ns)


async def connect() -> None:
    await broker.startup()


async def enqueue_many(n: int) -> None:
    for _ in range(n):
        await noop.kiq(0)


async def enqueue_one(sent_ns: int) -> None:
    await noop.kiq(sent_ns)


def worker_argv() -> list[str]:
    return [
        *(str(BIN / "taskiq"), "worker", "peers.taskiq:broker", "--workers", "1"),
        *("--max-async-tasks", str(CONCURRENCY), "--log-level", "WARNING"),
    ]


async def close() -> None:
    await broker.shutdown()
