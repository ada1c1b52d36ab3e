"""dramatiq: ``send`` in a loop, ``dramatiq`` CLI with one process.

Redis broker, or in ``--amqp`` mode its RabbitmqBroker (pika), on a queue of this run's
own name.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from .common import AMQP_URL, BIN, NS, REDIS_URL, concurrency, record

CONCURRENCY = concurrency(16)  # --threads (default 8)
ENQUEUE = "actor.send loop"
KEYS = [f"{NS}*"]
if AMQP_URL:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker: dramatiq.Broker = RabbitmqBroker(url=AMQP_URL)
    QUEUE = NS
    # The queue, its delay queue and its dead-letter queue (default exchange only).
    AMQP_QUEUES = [QUEUE, f"{QUEUE}.DQ", f"{QUEUE}.XQ"]
else:
    broker = RedisBroker(url=REDIS_URL, namespace=NS)
    QUEUE = "default"  # the keys are in the run's namespace
    AMQP_QUEUES = []
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def noop(sent_ns: int) -> None:
    record(sent_ns)


async def connect() -> None:
    if isinstance(broker, RedisBroker):
        broker.client.ping()
    else:
        broker.connection  # noqa: B018 (opens this thread's connection)


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
