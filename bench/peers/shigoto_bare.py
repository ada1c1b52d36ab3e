"""shigoto on RabbitMQ alone (``compare.py --amqp``, library ``shigoto-bare``): the
``shigoto`` module with no record store in its URL, and a worker that imports this one."""

from __future__ import annotations

import os

os.environ["BENCH_SHIGOTO_STORELESS"] = "1"  # read by .shigoto when it builds its URL

from . import shigoto
from .shigoto import (
    AMQP_EXCHANGES,
    AMQP_QUEUES,
    CONCURRENCY,
    ENQUEUE,
    KEYS,
    app,
    close,
    connect,
    enqueue_many,
    enqueue_one,
)

__all__ = [
    "AMQP_EXCHANGES",
    "AMQP_QUEUES",
    "CONCURRENCY",
    "ENQUEUE",
    "KEYS",
    "app",
    "close",
    "connect",
    "enqueue_many",
    "enqueue_one",
    "worker_argv",
]


def worker_argv() -> list[str]:
    return shigoto.worker_argv("peers.shigoto_bare")
