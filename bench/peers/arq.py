"""arq: ``enqueue_job`` in a loop (it has no bulk call), the ``arq`` worker CLI."""

from __future__ import annotations

from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from .common import BIN, NS, REDIS_URL, concurrency, record

CONCURRENCY = concurrency(200)  # max_jobs (default 10)
ENQUEUE = "enqueue_job loop"
KEYS = ["arq:*", f"{NS}*"]
settings = RedisSettings.from_dsn(REDIS_URL)
pool: ArqRedis | None = None


async def noop(ctx: dict[str, Any], sent_ns: int) -> None:
    record(sent_ns)


class WorkerSettings:
    functions = [noop]  # noqa: RUF012
    queue_name = NS
    redis_settings = settings
    max_jobs = CONCURRENCY


async def connect() -> None:
    global pool
    pool = await create_pool(settings, default_queue_name=NS)


async def enqueue_many(n: int) -> None:
    assert pool is not None
    for _ in range(n):
        await pool.enqueue_job("noop", 0)


async def enqueue_one(sent_ns: int) -> None:
    assert pool is not None
    await pool.enqueue_job("noop", sent_ns)


def worker_argv() -> list[str]:
    return [str(BIN / "arq"), "peers.arq.WorkerSettings"]


async def close() -> None:
    if pool is not None:
        await pool.aclose()
