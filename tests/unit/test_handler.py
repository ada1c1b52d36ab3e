"""@app.job: handler signatures are checked at definition, job data at enqueue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shigoto import App, Backoff, ConfigurationError, JobHandler


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def app(db_path: Path) -> App:
    return App(f"sqlite:///{db_path}")


def test_a_handler_keeps_its_name_queue_and_options(app: App) -> None:
    @app.job(queue="email", attempts=5, backoff=Backoff.fixed(1), priority=2)
    async def send_welcome(ctx: Any, user_id: int) -> None: ...

    assert isinstance(send_welcome, JobHandler)
    assert send_welcome.name == "send_welcome"
    assert send_welcome.queue_name == "email"
    assert send_welcome.options == {"attempts": 5, "backoff": Backoff.fixed(1), "priority": 2}
    assert send_welcome.is_async
    assert app.handlers["send_welcome"] is send_welcome
    assert getattr(send_welcome, "__name__", None) == "send_welcome"


def test_a_bare_decorator_and_a_plain_function_work(app: App) -> None:
    @app.job
    def resize(ctx: Any, path: str) -> str:
        return path.upper()

    assert resize.queue_name == "default"
    assert not resize.is_async
    assert resize(None, "a.png") == "A.PNG"


def test_an_explicit_name_overrides_the_function_name(app: App) -> None:
    @app.job(name="reports.daily")
    async def daily(ctx: Any) -> None: ...

    assert "reports.daily" in app.handlers


def test_a_handler_without_a_ctx_parameter_is_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="takes the job context first"):

        @app.job
        async def no_ctx() -> None: ...


def test_a_handler_whose_first_parameter_is_keyword_only_is_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="job context first"):

        @app.job
        async def kw_only(*, ctx: Any) -> None: ...


@pytest.mark.parametrize("param", ["priority", "delay", "job_id", "attempts", "timeout"])
def test_a_parameter_named_like_an_enqueue_option_is_refused(app: App, param: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"async def handler(ctx, {param}): ...", namespace)

    with pytest.raises(ConfigurationError, match=f"'{param}'") as info:
        app.job(namespace["handler"])

    assert "enqueue options" in str(info.value)


def test_registering_the_same_name_twice_is_refused(app: App) -> None:
    @app.job
    async def task(ctx: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="already registered"):
        app.job(name="task")(lambda ctx: None)


def test_handler_options_are_validated_at_definition(app: App) -> None:
    with pytest.raises(ConfigurationError, match="attempts"):
        app.job(attempts=0)
    with pytest.raises(ConfigurationError, match="should_retry"):
        app.job(should_retry="yes")  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="unknown job option"):
        app.job(retries=3)


def test_a_non_callable_is_refused(app: App) -> None:
    with pytest.raises(ConfigurationError):
        app.job(name="x")(42)  # type: ignore[type-var]


def test_data_matching_the_signature_passes(app: App) -> None:
    @app.job
    async def send(ctx: Any, user_id: int, template: str = "welcome", **extra: Any) -> None: ...

    send.check_data({"user_id": 1})
    send.check_data({"user_id": 1, "template": "bye", "utm": "x"})


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({}, "missing a required argument: 'user_id'"),
        ({"user_id": 1, "colour": "red"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_data_not_matching_the_signature_is_refused_naming_the_job(
    app: App, data: dict[str, Any], words: str
) -> None:
    @app.job
    async def send(ctx: Any, user_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match=words) as info:
        send.check_data(data)

    assert "'send'" in str(info.value)


async def test_enqueue_refuses_bad_data_before_touching_the_backend(
    app: App, db_path: Path
) -> None:
    @app.job
    async def send(ctx: Any, user_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match="user_id"):
        await send.enqueue(userid=1)
    with pytest.raises(ConfigurationError, match="unexpected keyword argument 'user'"):
        await send.enqueue(user_id=1, user="x")

    assert not db_path.exists()


async def test_enqueue_separates_options_from_data(app: App) -> None:
    @app.job(queue="email")
    async def send(ctx: Any, user_id: int) -> None: ...

    try:
        job = await send.enqueue(user_id=7, priority=3, delay=60, job_id="welcome:7")
        record = await job.refresh()
    finally:
        await app.close()

    assert job.id == "welcome:7"
    assert record.data == {"user_id": 7}
    assert record.priority == 3
    assert record.state.value == "delayed"


async def test_enqueue_refuses_invalid_options_naming_them(app: App) -> None:
    @app.job
    async def send(ctx: Any, user_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match="priority"):
        await send.enqueue(user_id=1, priority="high")
    with pytest.raises(ConfigurationError, match="delay"):
        await send.enqueue(user_id=1, delay=-1)
    with pytest.raises(ConfigurationError, match="job_id"):
        await send.enqueue(user_id=1, job_id="")
