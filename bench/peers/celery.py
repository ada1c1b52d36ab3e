"""celery (Redis transport): ``delay`` in a loop, ``celery worker`` in one process."""

from __future__ import annotations

from celery import Celery

from .common import BIN, NS, REDIS_URL, concurrency, record

CONCURRENCY = concurrency(1)  # -P solo: one process, one job at a time
POOL = "solo"
ENQUEUE = "task.delay loop"
KEYS = [f"{NS}*", "_kombu.binding.*", "unacked*"]
app = Celery(NS, broker=REDIS_URL)
app.conf.update(
    task_default_queue=NS,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop(sent_ns: int) -> None:
    record(sent_ns)


async def connect() -> None:
    with app.connection_for_write() as connection:
        connection.ensure_connection()


async def enqueue_many(n: int) -> None:
    for _ in range(n):
        noop.delay(0)


async def enqueue_one(sent_ns: int) -> None:
    noop.delay(sent_ns)


def worker_argv() -> list[str]:
    return [
        *(str(BIN / "celery"), "-A", "peers.celery", "worker", "-Q", NS, "-l", "WARNING"),
        *("-P", POOL, "-c", str(CONCURRENCY)),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]


async def close() -> None:
    app.close()
