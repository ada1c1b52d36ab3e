"""Typed handlers at run time: arguments bound by name, model arguments validated at
enqueue and rebuilt for the handler, options given apart from data (or, as before, mixed
in), and results typed by the handler's return annotation."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from shigoto import App, ConfigurationError, JobContext, PayloadError, SyncJobContext
from shigoto.testing import drain, enqueued


class Signup(msgspec.Struct):
    email: str
    plan: str = "free"


@dataclasses.dataclass
class Address:
    city: str
    zip_code: str


class Receipt(msgspec.Struct):
    email: str
    cents: int


def make_app(url: str) -> App:
    app = App(url)

    @app.job
    async def register(ctx: JobContext, signup: Signup, referrer: str | None = None) -> Receipt:
        assert isinstance(signup, Signup)
        return Receipt(email=signup.email, cents=100 if signup.plan == "pro" else 0)

    @app.job
    def ship(ctx: SyncJobContext, order_id: int, address: Address) -> str:
        assert isinstance(address, Address)
        return f"{order_id}->{address.city}"

    return app


async def test_a_struct_argument_is_validated_stored_as_json_and_rebuilt(shigoto_url: str) -> None:
    app = make_app(shigoto_url)
    register = app.handlers["register"]
    job = await register.enqueue(Signup(email="aiko@example.com", plan="pro"))
    [record] = await enqueued(app, name="register")
    assert record.data == {"signup": {"email": "aiko@example.com", "plan": "pro"}}
    await drain(app)
    result = await job.wait_until_finished(timeout=5)
    assert result == Receipt(email="aiko@example.com", cents=100)
    await app.close()


async def test_a_dict_for_a_model_argument_is_validated_against_the_model(
    shigoto_url: str,
) -> None:
    app = make_app(shigoto_url)
    ship = app.handlers["ship"]
    job = await ship.enqueue(order_id=7, address={"city": "Kyoto", "zip_code": "600-8216"})
    await drain(app)
    assert await job.wait_until_finished(timeout=5) == "7->Kyoto"
    await app.close()


async def test_an_invalid_model_argument_fails_at_enqueue_naming_the_argument_and_value(
    shigoto_url: str,
) -> None:
    app = make_app(shigoto_url)
    register = app.handlers["register"]
    with pytest.raises(PayloadError) as caught:
        await register.enqueue(signup={"email": 42})
    message = str(caught.value)
    assert "'register'" in message and "'signup'" in message and "Signup" in message
    assert "42" in message
    with pytest.raises(PayloadError, match="expected a Address or a dict"):
        await app.handlers["ship"].enqueue(order_id=1, address="Kyoto")
    assert await enqueued(app) == []
    await app.close()


async def test_options_apart_from_data_and_the_old_mixed_keywords_both_work(
    shigoto_url: str,
) -> None:
    app = App(shigoto_url)

    @app.job
    async def send_welcome(ctx: JobContext, user_id: int) -> int:
        return user_id * 2

    typed = await send_welcome.with_options(delay=60, priority=5, job_id="w:1").enqueue(1)
    mixed = await send_welcome.enqueue(user_id=2, delay=60, priority=5, job_id="w:2")
    positional = await send_welcome.enqueue(3)
    records = {r.id: r for r in await enqueued(app)}
    assert records["w:1"].data == {"user_id": 1} and records["w:2"].data == {"user_id": 2}
    assert records["w:1"].priority == records["w:2"].priority == 5
    assert records[positional.id].data == {"user_id": 3}
    assert typed.id == "w:1" and mixed.id == "w:2"
    await app.close()


def test_bad_options_fail_when_bound_not_when_enqueued() -> None:
    app = App("sqlite:///unused.db")

    @app.job
    async def send_welcome(ctx: JobContext, user_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match="priority must be an int"):
        send_welcome.with_options(priority="high")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="delay must be >= 0"):
        send_welcome.with_options(delay=-1)
    with pytest.raises(ConfigurationError, match="unexpected keyword argument 'email'"):
        app.handlers["send_welcome"].prepare((), {"user_id": 1, "email": "x"})


async def test_a_stored_model_argument_that_no_longer_validates_is_a_bad_payload(
    shigoto_url: str,
) -> None:
    app = make_app(shigoto_url)
    job = await app.queue().add("register", {"signup": {"plan": "pro"}})  # no email
    await drain(app, raise_errors=False)
    record = await job.refresh()
    assert record.state == "dead" and record.reason == "bad_payload"
    assert "signup" in record.errors[-1].message
    await app.close()


try:
    import pydantic
except ImportError:  # pydantic is optional
    pydantic = None  # type: ignore[assignment]

if pydantic is not None:

    class Profile(pydantic.BaseModel):
        name: str
        age: int


@pytest.mark.skipif(pydantic is None, reason="pydantic is not installed")
def test_pydantic_models_work_when_pydantic_is_installed() -> None:
    app = App("sqlite:///unused.db")

    @app.job
    async def save(ctx: JobContext, profile: Profile) -> None: ...

    data = app.handlers["save"].prepare((Profile(name="Aiko", age=30),), {})
    assert data == {"profile": {"name": "Aiko", "age": 30}}
    with pytest.raises(PayloadError, match="'profile' is not a valid Profile"):
        app.handlers["save"].prepare((), {"profile": {"name": "Aiko", "age": "old"}})


async def test_with_options_passes_payload_guard_options(shigoto_url: str) -> None:
    app = App(shigoto_url)

    @app.job
    async def login(ctx: JobContext, user_id: int, password: str = "") -> None: ...

    try:
        await login.with_options(allow_sensitive=["password"]).enqueue(1, password="p")
        [record] = await enqueued(app, name="login")
        assert record.data == {"user_id": 1, "password": "p"}
    finally:
        await app.close()
