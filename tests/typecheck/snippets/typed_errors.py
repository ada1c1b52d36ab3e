"""Each ``# E: <text>`` comment: mypy must report <text> on the next line, and only there."""

from __future__ import annotations

import msgspec

from shigoto import App, JobContext

app = App("sqlite:///typing-snippet.db")


class Signup(msgspec.Struct):
    email: str


@app.job(queue="email")
async def send_welcome(ctx: JobContext, user_id: int) -> str:
    return f"sent to {user_id}"


@app.job
async def register(ctx: JobContext, signup: Signup) -> None:
    return None


async def produce() -> None:
    # E: Argument "user_id" to "enqueue" of "JobHandler" has incompatible type "str"; expected "int"
    await send_welcome.enqueue(user_id="x")
    # E: Missing positional argument "user_id"
    await send_welcome.enqueue()
    # E: Unexpected keyword argument "email"
    await send_welcome.enqueue(user_id=1, email="a@b")
    # E: Unexpected keyword argument "delay"
    await send_welcome.enqueue(user_id=1, delay=5)
    # E: Argument "delay" to "with_options" of "JobHandler" has incompatible type "str"
    await send_welcome.with_options(delay="soon").enqueue(user_id=1)
    # E: Argument "user_id" to "enqueue" of "BoundEnqueue" has incompatible type "None"; expected "int"
    await send_welcome.with_options(priority=1).enqueue(user_id=None)
    job = await send_welcome.enqueue(user_id=1)
    # E: Incompatible types in assignment (expression has type "str", variable has type "int")
    count: int = await job.wait_until_finished()
    # E: Argument "signup" to "enqueue" of "JobHandler" has incompatible type "dict[str, int]"; expected "Signup"
    await register.enqueue(signup={"email": 1})
    print(count)
