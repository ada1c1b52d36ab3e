"""Scheduled jobs: cron and interval schedules, and the scheduler that fires them.

How a tick becomes exactly one job, with any number of scheduler processes and no
leader election:

1. Tick times are a pure function of the schedule (:mod:`shigoto.triggers`), so every
   scheduler computes the same ones.
2. Each tick is claimed through :meth:`Backend.claim_tick`, which in one atomic step
   moves the schedule's ``last_fire_ms`` strictly forward and enqueues the tick's job
   (id ``cron:{schedule}:{fire_ms}``). Only one claimant can move it; the others get
   False. Claims go in ascending order, so a slow scheduler never fires an old tick
   after a newer one was fired.
3. The tick state lives in the backend, so a restarted scheduler (or one on another
   machine) knows what already ran and applies the schedule's **misfire policy** to
   ticks that nobody claimed while every scheduler was down.

Misfire policies (a tick is *missed* when it is more than ``misfire_grace`` old,
default 60 s, and was never claimed):

* ``skip`` (default): missed ticks are dropped; the schedule resumes at its next tick.
* ``run_once``: the newest missed tick runs once as a catch-up job (older ones are
  dropped), besides the ticks that are still on time.
* ``run_all``: every missed tick runs, oldest first, up to ``misfire_limit`` of the
  newest ones.

The job of a tick knows which tick it is: ``ctx.scheduled_at`` (parsed from the job
id, so no backend stores anything extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from .backends.contract import Backend, NewJob, ScheduleState
from .clock import Seconds, seconds_of, to_ms
from .errors import ConfigurationError
from .handler import JobHandler
from .triggers import IntervalTrigger, Trigger, cron_trigger, zone

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

TICK_PREFIX = "cron:"
"""Job ids starting with this are reserved for scheduled ticks."""
MAX_NAME_LENGTH = 200
DEFAULT_GRACE_S = 60.0
DEFAULT_MISFIRE_LIMIT = 100
MAX_DUE_PER_TICK = 1000
"""Most ticks of one schedule fired in one pass (bounds a run_all catch-up)."""


class Misfire(enum.StrEnum):
    """What happens to ticks missed while every scheduler was down."""

    SKIP = "skip"
    RUN_ONCE = "run_once"
    RUN_ALL = "run_all"


class Schedule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One schedule: when (``cron`` + ``tz``, or ``every_ms``), what (job, queue, data),
    and what to do with missed ticks. Plain data: run-time schedules are stored in the
    backend in exactly this form (JSON)."""

    name: str
    job: str
    queue: str
    cron: str | None = None
    tz: str = "UTC"
    every_ms: int | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    misfire: Misfire = Misfire.SKIP
    misfire_limit: int = DEFAULT_MISFIRE_LIMIT
    misfire_grace_ms: int = to_ms(DEFAULT_GRACE_S)

    @property
    def trigger(self) -> Trigger:
        if self.cron is not None:
            return cron_trigger(self.cron, self.tz)
        assert self.every_ms is not None
        return IntervalTrigger(self.every_ms)

    @property
    def when(self) -> str:
        """``0 9 * * *`` or ``every 5m``."""
        return self.trigger.describe()

    def next_fires(self, after_ms: int, count: int = 3) -> list[int]:
        """The next ``count`` fire times after ``after_ms``."""
        out: list[int] = []
        at: int | None = after_ms
        while len(out) < count and at is not None:
            at = self.trigger.next_after(at)
            if at is not None:
                out.append(at)
        return out


_schedule_decoder = msgspec.json.Decoder(Schedule)


def define_schedule(
    *,
    name: str | None,
    job: str,
    queue: str,
    cron: str | None = None,
    tz: str | tzinfo | None = None,
    every: Seconds | None = None,
    data: Mapping[str, Any] | None = None,
    misfire: Misfire | str = Misfire.SKIP,
    misfire_limit: int = DEFAULT_MISFIRE_LIMIT,
    misfire_grace: Seconds = DEFAULT_GRACE_S,
) -> Schedule:
    """Validate everything now and build a :class:`Schedule`; errors name the schedule
    and its expression. ``name=None`` validates a decorator's settings before the
    function (and so the default name) is known."""
    if name is not None and (not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH):
        raise ConfigurationError(
            f"schedule name must be 1-{MAX_NAME_LENGTH} characters, got {name!r}"
        )
    when = f"cron {cron!r}" if cron is not None else f"every {every!r}"
    what = f"schedule {name!r} ({when})" if name else when
    if (cron is None) == (every is None):
        raise ConfigurationError(f"{what}: give exactly one of cron= or every=")
    try:
        kind = Misfire(misfire)
    except ValueError:
        raise ConfigurationError(
            f"{what}: misfire must be one of {', '.join(m.value for m in Misfire)}, got {misfire!r}"
        ) from None
    if isinstance(misfire_limit, bool) or not isinstance(misfire_limit, int):
        raise ConfigurationError(f"{what}: misfire_limit must be an int, got {misfire_limit!r}")
    if not 1 <= misfire_limit <= MAX_DUE_PER_TICK:
        raise ConfigurationError(
            f"{what}: misfire_limit must be between 1 and {MAX_DUE_PER_TICK}, got {misfire_limit}"
        )
    grace_ms = _duration_ms(misfire_grace, f"{what}: misfire_grace")
    if data is not None and not isinstance(data, Mapping):
        raise ConfigurationError(f"{what}: data must be a mapping, got {type(data).__name__}")
    try:
        payload = dict(data or {})
        msgspec.json.encode(payload)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{what}: data is not JSON-encodable: {exc}") from None
    try:
        tz_name = zone(tz).key
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
    every_ms = None
    if cron is not None:
        try:
            cron = cron_trigger(cron, tz_name).expr
        except ConfigurationError as exc:  # its message names the expression
            raise ConfigurationError(f"schedule {name!r}: {exc}" if name else str(exc)) from None
    else:
        assert every is not None
        if tz is not None and tz_name != "UTC":
            raise ConfigurationError(
                f"{what}: tz= applies to cron schedules; every= counts real time (use "
                "cron= for 'every day at 09:00 local time')"
            )
        every_ms = _duration_ms(every, f"{what}: every")
        IntervalTrigger(every_ms)  # raises when too short
    return Schedule(
        name=name or "",
        job=job,
        queue=queue,
        cron=cron,
        tz=tz_name,
        every_ms=every_ms,
        data=payload,
        misfire=kind,
        misfire_limit=misfire_limit,
        misfire_grace_ms=grace_ms,
    )


def _duration_ms(value: Seconds, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise ConfigurationError(f"{what} must be seconds or a timedelta, got {value!r}")
    if seconds_of(value) <= 0:
        raise ConfigurationError(f"{what} must be > 0, got {value!r}")
    return to_ms(value)


# -- which ticks are due ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Due:
    """The ticks of one schedule to fire now, oldest first, and what was left out."""

    fire: list[int]
    dropped_before_ms: int | None = None
    """Set when missed ticks were dropped by the policy: the newest one dropped."""


def due_ticks(schedule: Schedule, *, after_ms: int, now_ms: int) -> Due:
    """Ticks in ``(after_ms, now_ms]`` to fire under the schedule's misfire policy.

    Pure: walks back from ``now_ms`` (so a schedule idle for a year costs no more than
    one idle for a minute) and stops as soon as the policy needs nothing older.
    """
    trigger = schedule.trigger
    on_time: list[int] = []
    missed: list[int] = []
    dropped: int | None = None
    want_missed = {
        Misfire.SKIP: 0,
        Misfire.RUN_ONCE: 1,
        Misfire.RUN_ALL: schedule.misfire_limit,
    }[schedule.misfire]
    fire = trigger.latest_at_or_before(now_ms)
    while fire is not None and fire > after_ms:
        if now_ms - fire <= schedule.misfire_grace_ms:
            if len(on_time) >= MAX_DUE_PER_TICK:
                dropped = fire
                break
            on_time.append(fire)
        elif len(missed) < want_missed:
            missed.append(fire)
        else:
            dropped = fire
            break
        fire = trigger.latest_at_or_before(fire - 1)
    return Due(sorted(missed + on_time), dropped)


def tick_job_id(schedule: str, fire_ms: int) -> str:
    """The deterministic id of a tick's job."""
    return f"{TICK_PREFIX}{schedule}:{fire_ms}"


def scheduled_at(job_id: str) -> datetime | None:
    """The tick a scheduled job belongs to (UTC), from its id; None for other jobs."""
    if not job_id.startswith(TICK_PREFIX):
        return None
    _, _, tail = job_id.rpartition(":")
    if not tail.isdigit():
        return None
    return datetime.fromtimestamp(int(tail) / 1000, UTC)


# -- the registry on App ---------------------------------------------------------------


class Schedules:
    """An app's schedules: declared in code (``@app.cron``, ``@app.every``) or stored in
    the backend at run time (``app.schedule``). ``app.schedules`` is one of these."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.declared: dict[str, Schedule] = {}

    def decorator(
        self,
        *,
        cron: str | None = None,
        every: Seconds | None = None,
        tz: str | tzinfo | None = None,
        name: str | None = None,
        queue: str | None = None,
        data: Mapping[str, Any] | None = None,
        misfire: Misfire | str = Misfire.SKIP,
        misfire_limit: int = DEFAULT_MISFIRE_LIMIT,
        misfire_grace: Seconds = DEFAULT_GRACE_S,
        **job_options: Any,
    ) -> Callable[[F], JobHandler[Any]]:
        """What ``@app.cron`` / ``@app.every`` return. The expression, zone and options
        are validated here, at decoration time, so a typo fails on import."""
        label = f"cron {cron!r}" if cron is not None else f"every {every!r}"
        probe = define_schedule(
            name=name,
            job="-",
            queue=queue or "default",
            cron=cron,
            tz=tz,
            every=every,
            data=data,
            misfire=misfire,
            misfire_limit=misfire_limit,
            misfire_grace=misfire_grace,
        )

        def register(fn: F) -> JobHandler[Any]:
            default = fn.name if isinstance(fn, JobHandler) else getattr(fn, "__name__", "")
            schedule_name = name or str(default)
            self._check_free(schedule_name)  # before registering the job, not after
            handler: JobHandler[Any]
            if isinstance(fn, JobHandler):
                if job_options:
                    raise ConfigurationError(
                        f"{label}: job options {sorted(job_options)} belong on @app.job, "
                        f"which already registered {fn.name!r}"
                    )
                handler = fn
            else:
                handler = self.app.job(queue=queue or "default", **job_options)(fn)
            schedule = msgspec.structs.replace(
                probe,
                name=name or handler.name,
                job=handler.name,
                queue=queue or handler.queue_name,
            )
            if schedule.data:
                handler.check_data(schedule.data)
            self.add(schedule)
            return handler

        return register

    def _check_free(self, name: str) -> None:
        if name in self.declared:
            raise ConfigurationError(
                f"a schedule named {name!r} is already declared; pass name= to tell "
                "two schedules of one job apart"
            )

    def add(self, schedule: Schedule) -> Schedule:
        """Declare a schedule in code (what the decorators do)."""
        self._check_free(schedule.name)
        self.app.queue(schedule.queue)  # validates the queue name
        self.declared[schedule.name] = schedule
        return schedule

    async def schedule(
        self,
        name: str,
        job: str | JobHandler[Any],
        *,
        cron: str | None = None,
        every: Seconds | None = None,
        tz: str | tzinfo | None = None,
        queue: str | None = None,
        data: Mapping[str, Any] | None = None,
        misfire: Misfire | str = Misfire.SKIP,
        misfire_limit: int = DEFAULT_MISFIRE_LIMIT,
        misfire_grace: Seconds = DEFAULT_GRACE_S,
    ) -> Schedule:
        """Add or replace a run-time schedule, stored in the backend so every scheduler
        sees it (within a second). Replacing keeps its tick state: no tick is repeated."""
        job_name = job.name if isinstance(job, JobHandler) else job
        if not isinstance(job_name, str) or not job_name:
            raise ConfigurationError(f"job must be a job name or a handler, got {job!r}")
        if name in self.declared:
            raise ConfigurationError(
                f"schedule {name!r} is declared in code; run-time schedules need other names"
            )
        handler = self.app.handlers.get(job_name)
        schedule = define_schedule(
            name=name,
            job=job_name,
            queue=queue or (handler.queue_name if handler else "default"),
            cron=cron,
            tz=tz,
            every=every,
            data=data,
            misfire=misfire,
            misfire_limit=misfire_limit,
            misfire_grace=misfire_grace,
        )
        if handler is not None and schedule.data:
            handler.check_data(schedule.data)
        self.app.queue(schedule.queue)
        backend = await self._backend()
        await backend.save_schedule(
            name, msgspec.json.encode(schedule), now_ms=self.app.clock.now_ms()
        )
        return schedule

    async def unschedule(self, name: str) -> bool:
        """Remove a run-time schedule (and its tick state). False when there was none."""
        if name in self.declared:
            raise ConfigurationError(
                f"schedule {name!r} is declared in code; remove it from the code instead"
            )
        return await (await self._backend()).delete_schedule(name)

    async def stored(self) -> list[Schedule]:
        """The run-time schedules stored in the backend."""
        return [
            s
            for s in resolve(self.declared, await (await self._backend()).schedule_states())
            if s.name not in self.declared
        ]

    async def _backend(self) -> Backend:
        backend = await self.app.backend()
        require_schedules(backend)
        return backend


def require_schedules(backend: Backend) -> None:
    """Fail clearly on a backend that does not implement the schedules section yet."""
    if not hasattr(backend, "claim_tick"):
        raise ConfigurationError(
            f"the {backend.capabilities.name} backend does not support schedules yet"
        )


_warned: set[tuple[str, str]] = set()


def _warn_once(key: tuple[str, str], message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def resolve(declared: Mapping[str, Schedule], states: list[ScheduleState]) -> list[Schedule]:
    """Declared schedules plus the stored ones (declared wins a name clash), by name."""
    found = dict(declared)
    for state in states:
        if state.definition is None:
            continue
        try:
            stored = _schedule_decoder.decode(state.definition)
        except (msgspec.DecodeError, ValueError) as exc:
            _warn_once(("bad", state.name), "stored schedule %r is unreadable: %s", state.name, exc)
            continue
        if state.name in declared:
            _warn_once(
                ("clash", state.name),
                "stored schedule %r is shadowed by the schedule of that name declared in code",
                state.name,
            )
            continue
        found[state.name] = stored
    return [found[name] for name in sorted(found)]


# -- the scheduler loop ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fired:
    """One tick this scheduler claimed, and the job it enqueued."""

    schedule: str
    fire_ms: int
    queue: str
    job_id: str


class Scheduler:
    """Fires the app's schedules: ``shigoto scheduler APP``, or beside a worker with
    ``shigoto worker APP --with-scheduler``. Run as many as you like for availability.

    Each pass (:meth:`tick`) reads every schedule's tick state in one backend call,
    claims the due ticks, and the loop then sleeps until the next fire time (at most
    ``poll_s``, which is also how soon a new run-time schedule is noticed). Tests call
    :meth:`tick` with explicit times instead of running the loop.
    """

    def __init__(self, app: App, *, poll_s: float = 1.0, handle_signals: bool = True) -> None:
        if not poll_s > 0:
            raise ConfigurationError(f"scheduler poll_s must be > 0, got {poll_s!r}")
        self.app = app
        self.poll_s = poll_s
        self.handle_signals = handle_signals
        self.fired = 0
        self._next_ms: int | None = None
        self._dropped: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<Scheduler of {self.app!r}>"

    async def tick(self, now_ms: int | None = None) -> list[Fired]:
        """One pass: claim every due tick of every schedule at ``now_ms`` (default: the
        app's clock). Returns the ticks this scheduler won."""
        now = self.app.clock.now_ms() if now_ms is None else now_ms
        backend = await self.app.backend()
        require_schedules(backend)
        states = {s.name: s for s in await backend.schedule_states()}
        schedules = resolve(self.app.schedules.declared, list(states.values()))
        unseen = [s.name for s in schedules if s.name not in states]
        if unseen:
            await backend.register_schedules(unseen, now_ms=now)
            states = {s.name: s for s in await backend.schedule_states()}
        fired: list[Fired] = []
        upcoming: list[int] = []
        for schedule in schedules:
            state = states.get(schedule.name)
            if state is None:  # unscheduled meanwhile
                continue
            try:
                fired.extend(await self._fire(backend, schedule, state, now))
            except Exception:
                log.exception("schedule %r: firing failed; retrying next pass", schedule.name)
            following = schedule.trigger.next_after(now)
            if following is not None:
                upcoming.append(following)
        self._next_ms = min(upcoming, default=None)
        self.fired += len(fired)
        return fired

    async def _fire(
        self, backend: Backend, schedule: Schedule, state: ScheduleState, now: int
    ) -> list[Fired]:
        after = state.last_fire_ms if state.last_fire_ms is not None else state.since_ms
        due = due_ticks(schedule, after_ms=after, now_ms=now)
        if due.dropped_before_ms is not None and self._dropped.get(schedule.name) != (
            due.dropped_before_ms
        ):
            self._dropped[schedule.name] = due.dropped_before_ms
            log.warning(
                "schedule %r: ticks missed while no scheduler ran, up to %s, were dropped "
                "(misfire=%s)",
                schedule.name,
                datetime.fromtimestamp(due.dropped_before_ms / 1000, UTC).isoformat(),
                schedule.misfire.value,
            )
        out: list[Fired] = []
        queue = self.app.queue(schedule.queue)
        for fire in due.fire:
            job: NewJob = queue._new_job(
                schedule.job, schedule.data, tick_job_id(schedule.name, fire), None, {}, now
            )
            if await backend.claim_tick(schedule.name, fire, job, now_ms=now):
                out.append(Fired(schedule.name, fire, job.queue, job.id))
                await self.app.audit.record(  # the tick's job, like any enqueue
                    "enqueue",
                    queue=job.queue,
                    job_id=job.id,
                    actor=job.options.actor,
                    details={"name": job.name, "schedule": schedule.name},
                    backend=backend,
                )
                log.info(
                    "schedule %r fired tick %s as job %s (%d ms late)",
                    schedule.name,
                    datetime.fromtimestamp(fire / 1000, UTC).isoformat(),
                    job.id,
                    now - fire,
                    extra={"job_id": job.id, "queue": job.queue},
                )
        return out

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when ``handle_signals``)."""
        self._loop = asyncio.get_running_loop()
        require_schedules(await self.app.backend())
        signals: list[int] = []
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stopping.set)
                signals.append(sig)
        names = sorted(self.app.schedules.declared)
        log.info("scheduler started: %d schedule(s) in code: %s", len(names), ", ".join(names))
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    await self.tick()
                except ConfigurationError:
                    raise
                except Exception as exc:
                    failures += 1
                    log.warning("scheduler pass failed (%s: %s); retrying", type(exc).__name__, exc)
                    wait = min(5.0, 0.05 * 2**failures)
                else:
                    failures = 0
                    wait = self._wait_s()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
        finally:
            for number in signals:
                self._loop.remove_signal_handler(number)
            log.info("scheduler stopped: %d tick(s) fired", self.fired)

    def _wait_s(self) -> float:
        if self._next_ms is None:
            return self.poll_s
        # Wake just after the next fire time (a few ms of slack absorb timer jitter).
        wait = (self._next_ms - self.app.clock.now_ms() + 5) / 1000
        return min(max(wait, 0.005), self.poll_s)

    def stop(self) -> None:
        """Ask the loop to stop; safe from any thread or a signal handler."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stopping.set()
            return
        loop.call_soon_threadsafe(self._stopping.set)

    def running(self) -> _Running:
        """``async with scheduler.running(): await worker.run()``: the loop runs in the
        background for the duration of the block (how ``--with-scheduler`` works)."""
        return _Running(self)


class _Running:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Scheduler:
        require_schedules(await self.scheduler.app.backend())  # fail now, not in the task
        self.task = asyncio.create_task(self.scheduler.run(), name="shigoto-scheduler")
        return self.scheduler

    async def __aexit__(self, *exc: object) -> None:
        self.scheduler.stop()
        if self.task is not None:
            await self.task
