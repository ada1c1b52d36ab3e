"""Type-checks cleanly under ``mypy --strict``: what typed handlers promise."""

from __future__ import annotations

import dataclasses
from typing import assert_type

import msgspec

from shigoto import App, Job, JobContext, JobHandler, SyncJobContext

app = App("sqlite:///typing-snippet.db")


class Signup(msgspec.Struct):
    email: str
    plan: str = "free"


@dataclasses.dataclass
class Receipt:
    order_id: int
    cents: int


@app.job(queue="email", attempts=3)
async def send_welcome(ctx: JobContext, user_id: int) -> str:
    return f"sent to {user_id}"


@app.job
def resize(ctx: SyncJobContext, path: str, width: int = 100) -> dict[str, int]:
    return {"width": width}


@app.job
async def register(ctx: JobContext, signup: Signup) -> Receipt:
    return Receipt(order_id=1, cents=0)


async def produce() -> None:
    job = await send_welcome.enqueue(user_id=1)
    assert_type(job, Job[str])
    assert_type(await job.wait_until_finished(timeout=5), str)

    later = await send_welcome.with_options(delay=5, priority=1, job_id="w:1").enqueue(1)
    assert_type(later, Job[str])

    resized = await resize.enqueue("a.png", width=10)
    assert_type(await resized.wait_until_finished(), dict[str, int])

    receipt = await register.enqueue(signup=Signup(email="a@example.com"))
    assert_type(await receipt.wait_until_finished(), Receipt)

    untyped = await app.queue("email").add("send_welcome", {"user_id": 1})
    assert_type(untyped, Job)


def produce_sync() -> None:
    job = resize.enqueue_sync(path="a.png")
    assert_type(job.wait_until_finished_sync(), dict[str, int])
    send_welcome.with_options(delay=1).enqueue_sync(user_id=2)


def registry() -> None:
    handler: JobHandler[str, [int]] = send_welcome
    any_handler: JobHandler = app.handlers["send_welcome"]
    assert_type(handler, JobHandler[str, [int]])
    assert any_handler is handler
