"""shigoto itself, through its public API: ``add_bulk`` and the ``shigoto worker`` CLI."""

from __future__ import annotations

from shigoto import App, JobContext

from .common import BIN, NS, REDIS_URL, SQLITE, concurrency, record

CONCURRENCY = concurrency(50)  # bench/README.md: better than 10 or 200 on both backends
ENQUEUE = "queue.add_bulk"
KEYS = [f"{{{NS}:*", f"{{{NS}}}*"]

URL = f"sqlite:///{SQLITE}" if SQLITE else f"{REDIS_URL}?prefix={NS}"
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


def worker_argv() -> list[str]:
    return [str(BIN / "shigoto"), "worker", "peers.shigoto:app", "-q", NS, "-c", str(CONCURRENCY)]


async def close() -> None:
    await app.close()
