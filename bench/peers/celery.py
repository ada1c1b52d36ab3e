"""celery: ``delay`` in a loop, ``celery worker`` in one process.

Redis transport, or in ``--amqp`` mode its amqp transport (py-amqp, through kombu).
"""

from __future__ import annotations

from celery import Celery

from .common import AMQP_URL, BIN, NS, REDIS_URL, concurrency, record

CONCURRENCY = concurrency(1)  # -P solo: one process, one job at a time
POOL = "solo"
ENQUEUE = "task.delay loop"
KEYS = [f"{NS}*", "_kombu.binding.*", "unacked*"]
app = Celery(NS, broker=AMQP_URL or REDIS_URL)
app.conf.update(
    task_default_queue=NS,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
AMQP_QUEUES: list[str] = []
AMQP_EXCHANGES: list[str] = []
if AMQP_URL:
    # The task queue and its direct exchange are named NS; the remote-control exchanges
    # (default "celery.pidbox", "reply.celery.pidbox") get this run's name too, so that
    # every exchange the run declares can be deleted after it. The worker's own pidbox
    # queue is auto-delete.
    app.conf.update(control_exchange=NS)
    AMQP_QUEUES = [NS]
    AMQP_EXCHANGES = [NS, f"{NS}.pidbox", f"reply.{NS}.pidbox"]


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
