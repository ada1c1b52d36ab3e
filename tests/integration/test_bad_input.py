"""Bad input fails early with a message that names the parameter or the job;
the blocking twins work from sync code and refuse to run inside an event loop."""

from __future__ import annotations

import datetime as dt

import pytest

from shigoto import App, ConfigurationError, JobContext, PayloadError, ShigotoError
from shigoto.testing import run_until_empty_sync

from ._support import FAST


def _app_with_job(url: str) -> App:
    app = App(url)

    @app.job
    async def send_welcome(ctx: JobContext, user_id: int) -> int:
        return user_id

    return app


async def test_a_payload_that_is_not_json_names_the_job(app: App) -> None:
    with pytest.raises(PayloadError, match=r"job 'send_mail'.*not JSON-encodable"):
        await app.queue().add("send_mail", {"when": dt.datetime.now().time(), "x": object()})
    with pytest.raises(PayloadError, match=r"job 'send_mail'.*mapping"):
        await app.queue().add("send_mail", ["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match=r"job 'send_mail'.*over the limit"):
        await app.queue().add("send_mail", {"blob": "x" * 600_000})
    assert (await app.queue().counts())["waiting"] == 0  # nothing half-stored


async def test_handler_data_that_does_not_fit_the_signature_names_the_job(
    backend_url: str,
) -> None:
    app = _app_with_job(backend_url)
    handler = app.handlers["send_welcome"]
    try:
        with pytest.raises(ConfigurationError, match=r"job 'send_welcome'.*user_id"):
            await handler.enqueue()
        with pytest.raises(ConfigurationError, match=r"job 'send_welcome'.*'usr_id'"):
            await handler.enqueue(user_id=1, usr_id=2)
        with pytest.raises(PayloadError, match=r"job 'send_welcome'.*JSON"):
            await handler.enqueue(user_id=object())
    finally:
        await app.close()


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"attempts": 0}, r"attempts must be an int >= 1, got 0"),
        ({"attempts": "3"}, r"attempts must be an int >= 1"),
        ({"delay": -1}, r"delay must be >= 0 seconds, got -1"),
        ({"delay": "soon"}, r"delay must be seconds or a timedelta"),
        ({"timeout": 0}, r"timeout must be > 0 seconds"),
        ({"priority": 2**40}, r"priority must be an int between"),
        ({"remove_on_complete": -1}, r"remove_on_complete must be >= 0"),
        ({"job_id": ""}, r"job_id must be a non-empty string"),
        ({"atempts": 3}, r"unknown job option\(s\) \['atempts'\]"),
    ],
)
async def test_invalid_job_options_name_the_parameter(
    app: App, options: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ConfigurationError, match=pattern):
        await app.queue().add("send_mail", {}, **options)  # type: ignore[arg-type]
    assert (await app.queue().counts())["waiting"] == 0


async def test_a_bad_item_of_add_bulk_is_named_by_its_index(app: App) -> None:
    items = [{"name": "ok", "data": {}}, {"name": "ok", "attempts": 0}]
    with pytest.raises(ConfigurationError, match=r"add_bulk item 1: attempts must be"):
        await app.queue().add_bulk(items)
    with pytest.raises(ConfigurationError, match=r"add_bulk item 0 must be a mapping"):
        await app.queue().add_bulk([{"data": {}}])


def test_app_and_worker_configuration_errors_name_the_culprit(backend_url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown backend URL scheme 'mongodb'"):
        App("mongodb://localhost/jobs")
    with pytest.raises(ConfigurationError, match=r"backend URL must look like"):
        App("jobs.db")
    with pytest.raises(ConfigurationError, match=r"unknown job option\(s\) \['retries'\]"):
        App(backend_url, retries=3)

    app = _app_with_job(backend_url)
    with pytest.raises(ConfigurationError, match=r"concurrency must be an int >= 1, got 0"):
        app.worker(None, 0)
    with pytest.raises(ConfigurationError, match=r"lease_s must be > 0"):
        app.worker(None, 1, lease_s=0)
    with pytest.raises(ConfigurationError, match=r"heartbeat_s must be > 0 and below lease_s"):
        app.worker(None, 1, lease_s=1, heartbeat_s=2)
    with pytest.raises(ConfigurationError, match=r"unknown worker setting\(s\) \['leese_s'\]"):
        app.worker(None, 1, leese_s=1)
    with pytest.raises(ConfigurationError, match=r"queue name must be"):
        app.queue("{bad}")
    with pytest.raises(ConfigurationError, match=r"already registered"):

        @app.job(name="send_welcome")
        async def other(ctx: JobContext) -> None: ...

    with pytest.raises(ConfigurationError, match=r"takes the job context first"):

        @app.job
        async def no_ctx() -> None: ...


def test_sync_producer_calls_work_from_plain_sync_code(backend_url: str) -> None:
    app = _app_with_job(backend_url)
    try:
        job = app.handlers["send_welcome"].enqueue_sync(user_id=7)
        again = app.queue().add_sync("send_welcome", {"user_id": 7}, job_id=job.id)
        other = app.queue().add_sync("send_welcome", {"user_id": 8}, priority=5)
        assert job.created and not again.created and again.id == job.id
        assert app.queue().counts_sync()["waiting"] == 2

        worker = run_until_empty_sync(app, concurrency=2, **FAST)
        assert worker.processed == 2
        assert job.wait_until_finished_sync(timeout=2) == 7
        assert other.wait_until_finished_sync(timeout=2) == 8
    finally:
        app.close_sync()


async def test_sync_twins_inside_a_running_loop_say_to_use_await(app: App) -> None:
    with pytest.raises(ShigotoError, match=r"add_sync was called inside a running event loop"):
        app.queue().add_sync("send_mail", {})
    handler = _app_with_job(app.url).handlers["send_welcome"]
    with pytest.raises(ShigotoError, match=r"enqueue_sync .*running event loop; use the async"):
        handler.enqueue_sync(user_id=1)
    assert (await app.queue().counts())["waiting"] == 0
