"""The pytest plugin and ``shigoto.testing``, as a user's test suite sees them: fixtures
for an isolated app, ``drain`` that re-raises handler errors, and a frozen clock that
makes delays, retries and cron ticks due without sleeping."""

from __future__ import annotations

import textwrap

import pytest

from shigoto import App, Backoff, FrozenClock, JobContext
from shigoto.testing import JobErrors, drain, enqueued, fire_schedules

pytest_plugins = ["pytester"]


async def test_drain_runs_what_is_due_and_the_clock_makes_delayed_jobs_due(
    shigoto_app: App, shigoto_clock: FrozenClock
) -> None:
    ran: list[int] = []

    @shigoto_app.job
    async def remind(ctx: JobContext, user_id: int) -> None:
        ran.append(user_id)

    await remind.enqueue(1)
    await remind.with_options(delay=3600).enqueue(2)
    await drain(shigoto_app)
    assert ran == [1]
    assert [r.data for r in await enqueued(shigoto_app, name="remind")] == [{"user_id": 2}]
    shigoto_clock.advance(3600)
    await drain(shigoto_app)
    assert ran == [1, 2]


async def test_drain_reraises_what_a_handler_raised(shigoto_app: App) -> None:
    @shigoto_app.job(attempts=1)
    async def charge(ctx: JobContext, order_id: int) -> None:
        raise ValueError(f"card declined for order {order_id}")

    job = await charge.enqueue(order_id=7)
    with pytest.raises(JobErrors) as caught:
        await drain(shigoto_app)
    message = str(caught.value)
    assert "'charge'" in message and job.id in message
    assert "ValueError: card declined for order 7" in message
    assert "Traceback" in message


async def test_retries_are_stepped_through_with_the_frozen_clock(
    shigoto_app: App, shigoto_clock: FrozenClock
) -> None:
    calls: list[int] = []

    @shigoto_app.job(attempts=3, backoff=Backoff.fixed(30))
    async def flaky(ctx: JobContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("smtp down")
        return "sent"

    job = await flaky.enqueue()
    await drain(shigoto_app, raise_errors=False)
    assert calls == [1]
    shigoto_clock.advance(29)
    await drain(shigoto_app, raise_errors=False)
    assert calls == [1]  # not due yet
    shigoto_clock.advance(1)
    await drain(shigoto_app, raise_errors=False)
    shigoto_clock.advance(30)
    await drain(shigoto_app)
    assert calls == [1, 2, 3]
    assert await job.wait_until_finished(timeout=1) == "sent"


async def test_cron_ticks_fire_when_the_clock_reaches_them(
    shigoto_app: App, shigoto_clock: FrozenClock
) -> None:
    reports: list[str] = []

    @shigoto_app.cron("0 9 * * *", tz="Asia/Tokyo")
    async def daily_report(ctx: JobContext) -> None:
        reports.append(ctx.job_id)

    assert await fire_schedules(shigoto_app) == []  # 2023-11-14 22:13 UTC: not 9:00 JST
    midnight_utc_ms = 1_700_006_400_000  # 2023-11-15 00:00 UTC = 09:00 in Tokyo
    shigoto_clock.advance((midnight_utc_ms - shigoto_clock.now_ms()) / 1000)
    [fired] = await fire_schedules(shigoto_app)
    assert fired.schedule == "daily_report"
    assert await fire_schedules(shigoto_app) == []  # each tick once
    await drain(shigoto_app)
    assert reports == [fired.job_id]


def test_a_users_suite_gets_its_own_app_isolated_by_the_entry_point_plugin(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        """
        [pytest]
        asyncio_mode = auto
        shigoto_app = myjobs:app
        """
    )
    pytester.makepyfile(
        myjobs=textwrap.dedent(
            """
            from shigoto import App, JobContext

            app = App("sqlite:///should-never-be-used.db")
            sent: list[str] = []


            class EmailService:
                def send(self, to: str, subject: str) -> None:
                    sent.append(f"{to}: {subject}")


            email = EmailService()


            @app.job(queue="email")
            async def send_welcome(ctx: JobContext, user_id: int) -> str:
                email.send(f"user{user_id}@example.com", "Welcome!")
                return "ok"
            """
        ),
        test_welcome=textwrap.dedent(
            """
            import myjobs
            from shigoto.testing import drain, enqueued


            async def test_the_welcome_mail_is_sent(shigoto_app):
                assert shigoto_app is myjobs.app
                assert "should-never-be-used" not in shigoto_app.url
                job = await myjobs.send_welcome.enqueue(user_id=1)
                assert [r.data for r in await enqueued(shigoto_app, "email")] == [
                    {"user_id": 1}
                ]
                await drain(shigoto_app)
                assert await job.wait_until_finished(timeout=5) == "ok"
                assert myjobs.sent == ["user1@example.com: Welcome!"]


            async def test_each_test_starts_empty(shigoto_app):
                assert await enqueued(shigoto_app, "email") == []
            """
        ),
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2)
    assert not (pytester.path / "should-never-be-used.db").exists()
