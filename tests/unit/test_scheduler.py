"""Schedules: cron parsing, fire times in time zones and across DST, misfire policies.

Fire times are plain epoch milliseconds, so everything but the last section is pure
arithmetic. The misfire and DST-night tests drive a real Scheduler on the embedded
backend with a FrozenClock, calling ``tick`` at chosen instants instead of sleeping.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shigoto import App, ConfigurationError, JobContext, Misfire, SyncJobContext
from shigoto.schedule import (
    Schedule,
    define_schedule,
    due_ticks,
    scheduled_at,
    tick_job_id,
)
from shigoto.triggers import CronTrigger, IntervalTrigger, format_interval

NY = ZoneInfo("America/New_York")


def ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def utc(moment_ms: int) -> datetime:
    return datetime.fromtimestamp(moment_ms / 1000, UTC)


def fires(trigger: CronTrigger | IntervalTrigger, start: datetime, count: int) -> list[datetime]:
    out, at = [], ms(start)
    for _ in range(count):
        nxt = trigger.next_after(at)
        assert nxt is not None
        out.append(utc(nxt))
        at = nxt
    return out


def fires_between(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    out, at = [], ms(start)
    while (nxt := trigger.next_after(at)) is not None and nxt <= ms(end):
        out.append(utc(nxt))
        at = nxt
    return out


# -- cron expressions and zones ---------------------------------------------------------


def test_daily_report_at_nine_in_tokyo_fires_at_midnight_utc() -> None:
    trigger = CronTrigger("0 9 * * *", "Asia/Tokyo")
    start = datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert fires(trigger, start, 2) == [
        datetime(2024, 1, 2, 0, tzinfo=UTC),
        datetime(2024, 1, 3, 0, tzinfo=UTC),
    ]


def test_weekly_report_on_mondays_at_ten() -> None:
    trigger = CronTrigger("0 10 * * MON", "UTC")
    got = fires(trigger, datetime(2024, 1, 3, tzinfo=UTC), 2)  # a Wednesday
    assert got == [datetime(2024, 1, 8, 10, tzinfo=UTC), datetime(2024, 1, 15, 10, tzinfo=UTC)]
    assert all(d.weekday() == 0 for d in got)


def test_six_fields_put_seconds_first() -> None:
    trigger = CronTrigger("*/10 * * * * *")
    start = datetime(2024, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert [d.second for d in fires(trigger, start, 3)] == [10, 20, 30]
    assert CronTrigger("30 0 * * * *").next_after(ms(start)) == ms(
        datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@daily", datetime(2024, 1, 2, tzinfo=UTC)),
        ("@midnight", datetime(2024, 1, 2, tzinfo=UTC)),
        ("@hourly", datetime(2024, 1, 1, 13, tzinfo=UTC)),
        ("@weekly", datetime(2024, 1, 7, tzinfo=UTC)),  # Sunday
        ("@monthly", datetime(2024, 2, 1, tzinfo=UTC)),
        ("@yearly", datetime(2025, 1, 1, tzinfo=UTC)),
        ("@annually", datetime(2025, 1, 1, tzinfo=UTC)),
    ],
)
def test_aliases(alias: str, expected: datetime) -> None:
    start = datetime(2024, 1, 1, 12, 30, tzinfo=UTC)
    assert fires(CronTrigger(alias), start, 1) == [expected]


def test_next_is_strictly_after_and_latest_includes_the_instant() -> None:
    trigger = CronTrigger("0 12 * * *")
    noon = ms(datetime(2024, 5, 1, 12, tzinfo=UTC))
    assert trigger.next_after(noon) == noon + 86_400_000
    assert trigger.latest_at_or_before(noon) == noon
    assert trigger.latest_at_or_before(noon - 1) == noon - 86_400_000


@pytest.mark.parametrize(
    "expr",
    ["61 * * * *", "* * *", "* * * * * * *", "@reboot", "0 9 * * FUNDAY", "*/0 * * * *"],
)
def test_an_invalid_expression_fails_at_decoration_naming_it(expr: str) -> None:
    app = App("sqlite:///unused.db")
    with pytest.raises(ConfigurationError) as info:

        @app.cron(expr)
        async def job(ctx: object) -> None: ...

    assert repr(expr) in str(info.value)
    assert not app.handlers and not app.schedules.declared


def test_an_expression_that_never_fires_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"'0 0 31 2 \*' never fires"):
        CronTrigger("0 0 31 2 *")


def test_an_unknown_time_zone_fails_at_decoration_naming_the_expression_and_zone() -> None:
    app = App("sqlite:///unused.db")
    with pytest.raises(ConfigurationError) as info:

        @app.cron("0 9 * * *", tz="Asia/Tokio")
        async def report(ctx: object) -> None: ...

    assert "'0 9 * * *'" in str(info.value) and "'Asia/Tokio'" in str(info.value)


def test_a_zone_can_be_given_as_zoneinfo() -> None:
    schedule = define_schedule(
        name="s", job="j", queue="default", cron="0 9 * * *", tz=ZoneInfo("Asia/Tokyo")
    )
    assert schedule.tz == "Asia/Tokyo"


# -- daylight saving time (America/New_York, 2024: forward Mar 10, back Nov 3) ---------


def test_spring_forward_a_two_am_schedule_runs_once_at_three_edt() -> None:
    trigger = CronTrigger("0 2 * * *", "America/New_York")
    got = fires(trigger, datetime(2024, 3, 9, 12, tzinfo=NY), 3)
    local = [d.astimezone(NY) for d in got]
    assert [d.isoformat() for d in local] == [
        "2024-03-10T03:00:00-04:00",  # 02:00 does not exist: first instant after the gap
        "2024-03-11T02:00:00-04:00",
        "2024-03-12T02:00:00-04:00",
    ]
    assert [d.date() for d in local].count(datetime(2024, 3, 10).date()) == 1


def test_fall_back_a_two_am_schedule_runs_once() -> None:
    trigger = CronTrigger("0 2 * * *", "America/New_York")
    day = fires_between(
        trigger, datetime(2024, 11, 3, 0, tzinfo=NY), datetime(2024, 11, 3, 23, tzinfo=NY)
    )
    assert [d.astimezone(NY).isoformat() for d in day] == ["2024-11-03T02:00:00-05:00"]


def test_fall_back_a_fixed_time_inside_the_repeated_hour_runs_once_at_its_first_occurrence() -> (
    None
):
    trigger = CronTrigger("30 1 * * *", "America/New_York")
    day = fires_between(
        trigger, datetime(2024, 11, 3, 0, tzinfo=NY), datetime(2024, 11, 3, 23, tzinfo=NY)
    )
    assert [d.astimezone(NY).isoformat() for d in day] == ["2024-11-03T01:30:00-04:00"]
    back = trigger.latest_at_or_before(ms(datetime(2024, 11, 3, 12, tzinfo=NY)))
    assert back == ms(day[0])  # walking backwards agrees


def test_interval_like_cron_keeps_real_time_cadence_through_both_transitions() -> None:
    every_30 = CronTrigger("*/30 * * * *", "America/New_York")
    back = fires_between(
        every_30,
        datetime(2024, 11, 3, 4, tzinfo=UTC),
        datetime(2024, 11, 3, 8, tzinfo=UTC),
    )
    assert [b - a for a, b in itertools.pairwise(back)] == [timedelta(minutes=30)] * 7
    hourly = CronTrigger("@hourly", "America/New_York")
    forward = fires_between(
        hourly, datetime(2024, 3, 10, 4, tzinfo=UTC), datetime(2024, 3, 10, 9, tzinfo=UTC)
    )
    assert [b - a for a, b in itertools.pairwise(forward)] == [timedelta(hours=1)] * 4


# -- intervals --------------------------------------------------------------------------


def test_intervals_are_aligned_to_the_epoch() -> None:
    trigger = IntervalTrigger(300_000)
    start = datetime(2024, 1, 1, 10, 2, 17, tzinfo=UTC)
    assert [d.strftime("%H:%M") for d in fires(trigger, start, 3)] == ["10:05", "10:10", "10:15"]
    assert trigger.latest_at_or_before(ms(start)) == ms(datetime(2024, 1, 1, 10, tzinfo=UTC))


def test_intervals_under_a_second_are_refused() -> None:
    app = App("sqlite:///unused.db")
    with pytest.raises(ConfigurationError, match="too short"):
        app.every(0.5)
    with pytest.raises(ConfigurationError, match="> 0"):
        app.every(timedelta(0))


def test_interval_descriptions() -> None:
    assert format_interval(90_000) == "1m30s"
    assert format_interval(86_400_000) == "1d"
    assert IntervalTrigger(5_000).describe() == "every 5s"


# -- decorators --------------------------------------------------------------------------


def test_decorators_register_the_handler_and_the_schedule() -> None:
    app = App("sqlite:///unused.db")

    @app.cron("0 9 * * *", tz="Asia/Tokyo", queue="reports", data={"kind": "daily"}, attempts=5)
    async def report(ctx: object, kind: str) -> None: ...

    @app.every(timedelta(minutes=5), name="cleanup-often")
    def cleanup(ctx: object) -> None: ...

    assert app.handlers["report"].queue_name == "reports"
    assert app.handlers["report"].options == {"attempts": 5}
    daily = app.schedules.declared["report"]
    assert (daily.cron, daily.tz, daily.queue, daily.data) == (
        "0 9 * * *",
        "Asia/Tokyo",
        "reports",
        {"kind": "daily"},
    )
    often = app.schedules.declared["cleanup-often"]
    assert (often.job, often.every_ms, often.queue) == ("cleanup", 300_000, "default")


def test_stacking_on_an_existing_job_reuses_it_and_names_must_differ() -> None:
    app = App("sqlite:///unused.db")

    @app.cron("0 9 * * *", name="morning")
    @app.cron("0 18 * * *", name="evening")
    @app.job(queue="q")
    async def report(ctx: object) -> None: ...

    assert list(app.handlers) == ["report"]
    assert {s.queue for s in app.schedules.declared.values()} == {"q"}
    with pytest.raises(ConfigurationError, match="already declared"):
        app.cron("0 12 * * *", name="morning")(report)

    async def other(ctx: object) -> None: ...

    with pytest.raises(ConfigurationError, match="already declared"):
        app.cron("0 12 * * *", name="evening")(other)
    assert "other" not in app.handlers  # refused before registering the job
    with pytest.raises(ConfigurationError, match=r"belong on @app\.job"):
        app.cron("0 12 * * *", name="noon", attempts=2)(report)


def test_schedule_data_must_fit_the_handler() -> None:
    app = App("sqlite:///unused.db")
    with pytest.raises(ConfigurationError, match="report"):

        @app.cron("0 9 * * *", data={"unknown": 1})
        async def report(ctx: object) -> None: ...


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"misfire": "later"}, "misfire must be one of"),
        ({"misfire_limit": 0}, "misfire_limit"),
        ({"misfire_grace": -1}, "misfire_grace"),
        ({"data": [1]}, "data must be a mapping"),
        ({"data": {"x": object()}}, "JSON"),
    ],
)
def test_bad_settings_fail_at_decoration(settings: dict[str, object], match: str) -> None:
    app = App("sqlite:///unused.db")
    with pytest.raises(ConfigurationError, match=match):
        app.cron("0 9 * * *", **settings)  # type: ignore[arg-type]


def test_tick_ids_carry_the_tick_time() -> None:
    fire = ms(datetime(2024, 1, 2, 9, tzinfo=UTC))
    job_id = tick_job_id("daily:report", fire)
    assert job_id == f"cron:daily:report:{fire}"
    assert scheduled_at(job_id) == datetime(2024, 1, 2, 9, tzinfo=UTC)
    assert scheduled_at("welcome:1") is None
    assert scheduled_at("cron:oops") is None


# -- which ticks are due (pure) ----------------------------------------------------------

T0 = ms(datetime(2024, 1, 1, tzinfo=UTC))
MINUTE = 60_000


def every_minute(misfire: str, limit: int = 100) -> Schedule:
    return define_schedule(
        name="m",
        job="j",
        queue="default",
        every=60,
        misfire=misfire,
        misfire_limit=limit,
        misfire_grace=30,
    )


def test_nothing_is_due_before_the_first_tick_after_the_anchor() -> None:
    assert due_ticks(every_minute("skip"), after_ms=T0, now_ms=T0 + 59_999).fire == []
    assert due_ticks(every_minute("skip"), after_ms=T0, now_ms=T0 + MINUTE).fire == [T0 + MINUTE]


def test_skip_drops_ticks_older_than_the_grace() -> None:
    due = due_ticks(every_minute("skip"), after_ms=T0, now_ms=T0 + 10 * MINUTE + 5_000)
    assert due.fire == [T0 + 10 * MINUTE]
    assert due.dropped_before_ms == T0 + 9 * MINUTE


def test_run_once_adds_one_catch_up_tick_the_newest_missed() -> None:
    late = due_ticks(every_minute("run_once"), after_ms=T0, now_ms=T0 + 10 * MINUTE + 45_000)
    assert late.fire == [T0 + 10 * MINUTE]  # missed (45 s > grace), caught up once
    both = due_ticks(every_minute("run_once"), after_ms=T0, now_ms=T0 + 10 * MINUTE + 5_000)
    assert both.fire == [T0 + 9 * MINUTE, T0 + 10 * MINUTE]


def test_run_all_runs_the_missed_ticks_oldest_first_up_to_the_limit() -> None:
    schedule = every_minute("run_all", limit=4)
    all_of_them = due_ticks(schedule, after_ms=T0, now_ms=T0 + 3 * MINUTE + 45_000)
    assert all_of_them.fire == [T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE]
    bounded = due_ticks(schedule, after_ms=T0, now_ms=T0 + 100 * MINUTE + 45_000)
    assert bounded.fire == [T0 + m * MINUTE for m in (97, 98, 99, 100)]
    assert bounded.dropped_before_ms == T0 + 96 * MINUTE


def test_a_year_idle_costs_no_more_than_a_minute() -> None:
    schedule = define_schedule(name="s", job="j", queue="q", every=1, misfire="run_once")
    due = due_ticks(schedule, after_ms=T0, now_ms=T0 + 365 * 86_400_000 + 90_000)
    year = T0 + 365 * 86_400_000
    # the 61 ticks of the last minute are on time; of the older ones, one catches up
    assert due.fire == list(range(year + 29_000, year + 91_000, 1000))


# -- the scheduler with a frozen clock -------------------------------------------------


class ManualClock:
    """A frozen clock set to exact milliseconds (``clock.now = ...``)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def now_ms(self) -> int:
        return self.now


@pytest.fixture
async def clock_app(sqlite_url: str) -> AsyncIterator[tuple[App, ManualClock]]:
    clock = ManualClock(T0 + 500)
    app = App(sqlite_url, clock=clock)
    try:
        yield app, clock
    finally:
        await app.close()


async def fired_ids(app: App, queue: str = "default") -> list[str]:
    records = []
    for state in ("waiting", "delayed", "active", "completed"):
        records.extend(await app.queue(queue).jobs(state, limit=10_000))
    return sorted(r.id for r in records)


@pytest.mark.parametrize(
    ("misfire", "expected_minutes"),
    [("skip", [1, 2, 10]), ("run_once", [1, 2, 9, 10]), ("run_all", [1, 2, 5, 6, 7, 8, 9, 10])],
)
async def test_misfire_policies_after_every_scheduler_was_down(
    clock_app: tuple[App, ManualClock], misfire: str, expected_minutes: list[int]
) -> None:
    """Ticks at minutes 1 and 2 fire on time; then no scheduler runs until 10:05, so
    ticks 3..9 are missed (10 is on time): each policy treats them as documented."""
    app, clock = clock_app

    @app.every(60, misfire=misfire, misfire_limit=5, misfire_grace=30)
    async def sweep(ctx: object) -> None: ...

    scheduler = app.scheduler()
    await scheduler.tick()  # registers the schedule at T0 + 0.5 s
    for minute in (1, 2):
        clock.now = T0 + minute * MINUTE + 200
        assert len(await scheduler.tick()) == 1
    clock.now = T0 + 10 * MINUTE + 5_000
    await scheduler.tick()
    await scheduler.tick()  # a second pass fires nothing more
    assert await fired_ids(app) == [tick_job_id("sweep", T0 + m * MINUTE) for m in expected_minutes]


async def test_a_new_schedule_starts_at_its_next_tick_not_in_the_past(
    clock_app: tuple[App, ManualClock],
) -> None:
    app, clock = clock_app

    @app.cron("0 * * * *", misfire="run_all")
    async def hourly(ctx: object) -> None: ...

    scheduler = app.scheduler()
    clock.now = T0 + 30 * MINUTE
    assert await scheduler.tick() == []
    clock.now = T0 + 60 * MINUTE + 10
    assert [f.fire_ms for f in await scheduler.tick()] == [T0 + 60 * MINUTE]


async def test_two_schedulers_in_one_process_fire_each_tick_once(
    clock_app: tuple[App, ManualClock],
) -> None:
    app, clock = clock_app

    @app.every(1)
    async def beat(ctx: object) -> None: ...

    one, two = app.scheduler(), app.scheduler()
    await one.tick()
    won = 0
    for step in range(1, 31):
        clock.now = T0 + step * 1000 + 10
        first, second = (one, two) if step % 2 else (two, one)
        won += len(await first.tick()) + len(await second.tick())
    assert won == 30
    assert await fired_ids(app) == sorted(tick_job_id("beat", T0 + s * 1000) for s in range(1, 31))


async def test_changing_an_expression_neither_repeats_nor_skips_a_tick(
    clock_app: tuple[App, ManualClock],
) -> None:
    """Deploying a new expression under the same name continues from the last tick."""
    app, clock = clock_app

    @app.every(60, name="sync")
    async def sync(ctx: object) -> None: ...

    await app.scheduler().tick()
    clock.now = T0 + MINUTE + 100
    await app.scheduler().tick()
    app.schedules.declared["sync"] = define_schedule(
        name="sync", job="sync", queue="default", cron="*/2 * * * *"
    )
    clock.now = T0 + MINUTE + 200
    assert await app.scheduler().tick() == []  # 00:01 is not refired
    clock.now = T0 + 2 * MINUTE + 100
    assert [f.fire_ms for f in await app.scheduler().tick()] == [T0 + 2 * MINUTE]


async def test_a_removed_schedule_stops(clock_app: tuple[App, ManualClock]) -> None:
    app, clock = clock_app

    @app.every(1, name="gone")
    async def gone(ctx: object) -> None: ...

    await app.scheduler().tick()
    del app.schedules.declared["gone"]  # the next deploy no longer declares it
    clock.now = T0 + 5_000
    assert await app.scheduler().tick() == []


async def test_a_fall_back_night_fires_each_daily_schedule_once(
    clock_app: tuple[App, ManualClock],
) -> None:
    """Tick every minute from 00:00 EDT to 04:00 EST on 2024-11-03."""
    app, clock = clock_app

    @app.cron("0 2 * * *", tz="America/New_York")
    async def at_two(ctx: object) -> None: ...

    @app.cron("30 1 * * *", tz="America/New_York")
    async def at_half_past_one(ctx: object) -> None: ...

    scheduler = app.scheduler()
    start = ms(datetime(2024, 11, 3, 0, 0, tzinfo=NY))
    clock.now = start - 30_000
    await scheduler.tick()
    fired = []
    for minute in range(0, 5 * 60 + 1):
        clock.now = start + minute * MINUTE + 50
        fired.extend(await scheduler.tick())
    local = sorted((f.schedule, utc(f.fire_ms).astimezone(NY).isoformat()) for f in fired)
    assert local == [
        ("at_half_past_one", "2024-11-03T01:30:00-04:00"),
        ("at_two", "2024-11-03T02:00:00-05:00"),
    ]


async def test_a_spring_forward_night_fires_the_two_am_schedule_once(
    clock_app: tuple[App, ManualClock],
) -> None:
    app, clock = clock_app

    @app.cron("0 2 * * *", tz="America/New_York")
    async def at_two(ctx: object) -> None: ...

    scheduler = app.scheduler()
    start = ms(datetime(2024, 3, 10, 0, 0, tzinfo=NY))
    clock.now = start - 30_000
    await scheduler.tick()
    fired = []
    for minute in range(0, 4 * 60 + 1, 5):
        clock.now = start + minute * MINUTE + 50
        fired.extend(await scheduler.tick())
    assert [utc(f.fire_ms).astimezone(NY).isoformat() for f in fired] == [
        "2024-03-10T03:00:00-04:00"
    ]


async def test_misfire_enum_and_strings_are_equivalent() -> None:
    a = define_schedule(name="a", job="j", queue="q", every=5, misfire=Misfire.RUN_ALL)
    b = define_schedule(name="a", job="j", queue="q", every=5, misfire="run_all")
    assert a == b


async def test_run_time_schedules_are_stored_fired_replaced_and_removed(
    clock_app: tuple[App, ManualClock],
) -> None:
    app, clock = clock_app

    @app.job
    async def backup(ctx: object, target: str) -> None: ...

    saved = await app.schedule("nightly", backup, every=10, data={"target": "db"})
    assert (saved.job, saved.queue, saved.every_ms) == ("backup", "default", 10_000)
    assert [s.name for s in await app.schedules.stored()] == ["nightly"]
    scheduler = app.scheduler()
    await scheduler.tick()
    clock.now = T0 + 10_100
    [fired] = await scheduler.tick()
    assert fired.job_id == tick_job_id("nightly", T0 + 10_000)

    await app.schedule("nightly", "backup", every=20, data={"target": "files"})
    clock.now = T0 + 20_100
    [fired] = await scheduler.tick()
    job = await app.queue("default").get_job(fired.job_id)
    assert job is not None and job.record is not None
    assert job.record.data == {"target": "files"}

    assert await app.unschedule("nightly") is True
    assert await app.unschedule("nightly") is False
    clock.now = T0 + 40_100
    assert await scheduler.tick() == []


async def test_run_time_schedules_are_validated_and_cannot_shadow_code(
    clock_app: tuple[App, ManualClock],
) -> None:
    app, _ = clock_app

    @app.every(60)
    async def sweep(ctx: object) -> None: ...

    with pytest.raises(ConfigurationError, match="declared in code"):
        await app.schedule("sweep", "sweep", every=5)
    with pytest.raises(ConfigurationError, match="declared in code"):
        await app.unschedule("sweep")
    with pytest.raises(ConfigurationError, match=r"'0 25 \* \* \*'"):
        await app.schedule("bad", "sweep", cron="0 25 * * *")
    with pytest.raises(ConfigurationError, match="sweep"):
        await app.schedule("extra", "sweep", every=5, data={"nope": 1})


async def test_sync_and_async_handlers_see_the_tick_they_run_for(
    clock_app: tuple[App, ManualClock],
) -> None:
    app, clock = clock_app

    @app.every(1, name="a")
    async def tick_async(ctx: JobContext) -> str | None:
        return ctx.scheduled_at.isoformat() if ctx.scheduled_at else None

    @app.every(1, name="s")
    def tick_sync(ctx: SyncJobContext) -> str | None:
        return ctx.scheduled_at.isoformat() if ctx.scheduled_at else None

    @app.job
    async def plain(ctx: JobContext) -> str:
        return repr(ctx.scheduled_at)

    await app.scheduler().tick()
    clock.now = T0 + 1_000 + 700  # runs 0.7 s late: still knows its tick
    await app.scheduler().tick()
    plain_job = await plain.enqueue()
    await app.worker(burst=True, handle_signals=False).run()
    expected = utc(T0 + 1_000).isoformat()
    for name in ("a", "s"):
        job = await app.queue().get_job(tick_job_id(name, T0 + 1_000))
        assert job is not None and job.record is not None
        assert job.record.result_value == expected
    assert await plain_job.wait_until_finished(timeout=5) == "None"
