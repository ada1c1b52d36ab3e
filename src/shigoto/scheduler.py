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
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from .backends.contract import Backend, NewJob, ScheduleState
from .clock import Seconds
from .errors import ConfigurationError
from .handler import JobHandler
from .schedule import (
    DEFAULT_GRACE_S,
    DEFAULT_MISFIRE_LIMIT,
    Misfire,
    Schedule,
    define_schedule,
    due_ticks,
    schedule_decoder,
    tick_job_id,
)

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

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
            stored = schedule_decoder.decode(state.definition)
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
