"""shigoto itself, through its public API: ``add_bulk`` and the ``shigoto worker`` CLI.

On Redis, on SQLite (``--sqlite``), or in ``--amqp`` mode on RabbitMQ over a Redis record
store; ``shigoto_bare`` is this module on RabbitMQ alone (store-less).
"""

from __future__ import annotations

import os

from shigoto import App, JobContext

from .common import AMQP_URL, BIN, NS, REDIS_URL, SQLITE, concurrency, record

CONCURRENCY = concurrency(50)  # bench/README.md: better than 10 or 200 on both backends
ENQUEUE = "queue.add_bulk"
KEYS = [f"{{{NS}:*", f"{{{NS}}}*"]
STORELESS = os.environ.get("BENCH_SHIGOTO_STORELESS") == "1"  # set by shigoto_bare
# src/shigoto/backends/amqp/topology.py: the work queue, its dead queue and the prefix's
# routes exchange (the bench delays nothing, so no ``.wait.<ms>`` bucket is declared).
AMQP_QUEUES = [f"{NS}.{NS}", f"{NS}.{NS}.dead"] if AMQP_URL else []
AMQP_EXCHANGES = [f"{NS}.routes"] if AMQP_URL else []


def amqp_url() -> str:
    """A fresh prefix, ``expires`` as a backstop only (compare.py deletes the queues),
    and ``store=`` last: it takes the rest of the URL."""
    url = f"{AMQP_URL}{'&' if '?' in AMQP_URL else '?'}prefix={NS}&expires=600"
    return url if STORELESS else f"{url}&store={REDIS_URL}?prefix={NS}"


if STORELESS and not AMQP_URL:
    raise RuntimeError("shigoto-bare (store-less) runs in compare.py --amqp mode only")
if SQLITE:
    URL = f"sqlite:///{SQLITE}"
elif AMQP_URL:
    URL = amqp_url()
else:
    URL = f"{REDIS_URL}?prefix={NS}"
app = App(URL)
queue = app.queue(NS)


@app.job(queue=NS)
async def noop(ctx: JobContext, sent_ns: int) -> None:
    record(sent_ns)


async def connect() -> None:
    await app.backend()


async def enqueue_many(n: int) -> None:
    await queue.add_bulk({"name": "noop", "data": {"sent_ns": 0}} for _ in range(n))


async def enqueue_one(sent_ns: int) -> None:
    await queue.add("noop", {"sent_ns": sent_ns})


def worker_argv(module: str = "peers.shigoto") -> list[str]:
    return [str(BIN / "shigoto"), "worker", f"{module}:app", "-q", NS, "-c", str(CONCURRENCY)]


async def close() -> None:
    await app.close()
