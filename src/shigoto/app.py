"""App: the handler registry, defaults, and the backend chosen by URL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import typing
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

import msgspec

from .backends import Backend, open_backend
from .clock import Clock, Seconds, SystemClock
from .errors import ConfigurationError, PayloadError
from .events import EventBus, Listener
from .handler import JobDecorator, JobHandler
from .isolation import check_isolation
from .job import JobOptions, option_overrides
from .portal import Portal
from .queue import Queue
from .retry import ShouldRetry
from .schedule import Misfire, Schedule
from .scheduler import Scheduler, Schedules
from .security.audit import Audit, AuditSettings, acting_as
from .security.guard import GuardPolicy
from .security.protect import PayloadSecurity

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from .alerts import Alerts
    from .metrics import QueueMetrics
    from .routing import Route
    from .worker import Worker

DEFAULT_URL = "sqlite:///shigoto.db"
DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")


class App:
    """The entry point: ``App("redis://...")``, ``App()`` for ``sqlite:///shigoto.db``.

    The URL may also come from ``SHIGOTO_URL``. Keyword options (``attempts``,
    ``backoff``, ``timeout``, ...) become every job's defaults.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        guard: GuardPolicy | bool | None = None,
        audit: AuditSettings | bool | None = None,
        **defaults: Any,
    ) -> None:
        self.url = url or os.environ.get("SHIGOTO_URL") or DEFAULT_URL
        open_backend(self.url)  # validate the URL now, with a clear error
        self.clock: Clock = clock or SystemClock()
        if not isinstance(max_payload_bytes, int) or max_payload_bytes <= 0:
            raise ConfigurationError(f"max_payload_bytes must be > 0, got {max_payload_bytes!r}")
        self.max_payload_bytes = max_payload_bytes
        self.security = PayloadSecurity(guard)
        """Payload guard and field encryption (shigoto.security)."""
        if audit is None or audit is True:
            audit = AuditSettings()
        elif audit is False:
            audit = AuditSettings(enabled=False)
        self.audit = Audit(self, audit)
        """The audit trail: ``await app.audit.query(job_id=...)``."""
        self.default_options = msgspec.structs.replace(JobOptions(), **option_overrides(**defaults))
        self.handlers: dict[str, JobHandler[Any]] = {}
        self.events = EventBus()
        self.portal = Portal()
        self.schedules = Schedules(self)
        self.job_targets: dict[str, float | None] = {}
        """Granularity guard: each job name's target duration (None: long_running)."""
        self._alerts: Alerts | None = None
        self._queues: dict[str, Queue] = {}
        self._backends: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Backend] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"<App {self.url} handlers={sorted(self.handlers)}>"

    # -- defining jobs -------------------------------------------------------------------

    @overload
    def job(
        self, fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]], /
    ) -> JobHandler[R, P]: ...

    @overload
    def job(self, fn: Callable[Concatenate[Any, P], R], /) -> JobHandler[R, P]: ...

    @overload
    def job(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        should_retry: ShouldRetry | None = None,
        **options: Any,
    ) -> JobDecorator: ...

    def job(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        should_retry: ShouldRetry | None = None,
        **options: Any,
    ) -> JobHandler[Any] | JobDecorator:
        """Register a handler: ``@app.job`` or ``@app.job(queue="email", attempts=5)``.

        The job name defaults to the function's name. Options are validated now. The
        handler's parameters (after ``ctx``) and result type carry over to
        ``enqueue`` and ``Job.wait_until_finished`` for type checkers.
        """
        long_running = bool(options.pop("long_running", False))
        encrypt = options.pop("encrypt", None)
        allow_sensitive = options.pop("allow_sensitive", None)
        isolation = options.pop("isolation", None)
        rate_limit_key = options.pop("rate_limit_key", None)
        if rate_limit_key is not None and not callable(rate_limit_key):
            raise ConfigurationError("rate_limit_key must be callable(data) -> str | None")
        target_s = float(options.pop("target_s", 60.0))
        if not target_s > 0:
            raise ConfigurationError(f"target_s must be > 0 seconds, got {target_s}")
        overrides = option_overrides(**options)
        if should_retry is not None and not callable(should_retry):
            raise ConfigurationError("should_retry must be callable(error, attempts_made)")

        def register(func: Callable[..., Any]) -> JobHandler[Any]:
            job_name = name or getattr(func, "__name__", "")
            if not job_name:
                raise ConfigurationError(f"cannot derive a job name from {func!r}; pass name=")
            if job_name in self.handlers:
                raise ConfigurationError(f"a handler named {job_name!r} is already registered")
            self.queue(queue)  # validates the queue name
            checked_isolation = check_isolation(isolation, func, job_name)
            self.security.declare(job_name, encrypt, allow_sensitive)
            handler: JobHandler[Any] = JobHandler(
                self,
                func,
                name=job_name,
                queue=queue,
                options=overrides,
                should_retry=should_retry,
            )
            handler.isolation = checked_isolation
            handler.rate_limit_key = rate_limit_key
            self.handlers[job_name] = handler
            self.job_targets[job_name] = None if long_running else target_s
            return handler

        return register(fn) if fn is not None else typing.cast(JobDecorator, register)

    def metrics(self, queue: str = "default") -> QueueMetrics:
        """Metrics of one queue: ``await app.metrics("email").snapshot()``."""
        from .metrics import QueueMetrics

        return QueueMetrics(self, queue)

    @property
    def alerts(self) -> Alerts:
        """Alert rules and sinks (the brief's defaults until configured)."""
        if self._alerts is None:
            from .alerts import Alerts

            self._alerts = Alerts()
        return self._alerts

    def on(self, event: str, listener: Listener) -> Listener:
        """Subscribe to an event of every worker of this app (``completed``, ``failed``...)."""
        return self.events.on(event, listener)

    # -- schedules (shigoto.scheduler) ---------------------------------------------------

    def cron(
        self,
        expr: str,
        /,
        *,
        tz: str | tzinfo | None = None,
        name: str | None = None,
        queue: str | None = None,
        data: Mapping[str, Any] | None = None,
        misfire: Misfire | str = Misfire.SKIP,
        **options: Any,
    ) -> Callable[[F], JobHandler[Any]]:
        """Run the decorated handler on a cron schedule in a time zone (default UTC):
        ``@app.cron("0 9 * * *", tz="Asia/Tokyo")``. 5 fields, 6 (seconds first) or an
        alias (``@daily``). ``name`` defaults to the job name; ``misfire`` is ``skip``,
        ``run_once`` or ``run_all``; ``options`` may add ``misfire_limit``,
        ``misfire_grace`` and, when the function is not a job yet, job options.
        Invalid expressions and unknown zones fail here, naming the expression."""
        return self.schedules.decorator(
            cron=expr, tz=tz, name=name, queue=queue, data=data, misfire=misfire, **options
        )

    def every(
        self,
        interval: Seconds,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        data: Mapping[str, Any] | None = None,
        misfire: Misfire | str = Misfire.SKIP,
        **options: Any,
    ) -> Callable[[F], JobHandler[Any]]:
        """Run the decorated handler every ``interval`` (seconds or a timedelta, at least
        1 s), at multiples of it since the Unix epoch. Settings as for :meth:`cron`."""
        return self.schedules.decorator(
            every=interval, name=name, queue=queue, data=data, misfire=misfire, **options
        )

    async def schedule(self, name: str, job: str | JobHandler[Any], **settings: Any) -> Schedule:
        """Add or replace a schedule at run time, stored in the backend for every
        scheduler: ``await app.schedule("nightly", "backup", cron="0 2 * * *")``."""
        schedule = await self.schedules.schedule(name, job, **settings)
        await self.audit.record("schedule.save", details={"schedule": name, "job": schedule.job})
        return schedule

    async def unschedule(self, name: str) -> bool:
        """Remove a run-time schedule; False when there was none."""
        removed = await self.schedules.unschedule(name)
        if removed:
            await self.audit.record("schedule.delete", details={"schedule": name})
        return removed

    def schedule_sync(self, name: str, job: str | JobHandler[Any], **settings: Any) -> Schedule:
        return self.portal.call(self.schedule, name, job, **settings)

    def unschedule_sync(self, name: str) -> bool:
        return self.portal.call(self.unschedule, name)

    def scheduler(self, **settings: Any) -> Scheduler:
        """A scheduler for this app's schedules (``poll_s``, ``handle_signals``)."""
        return Scheduler(self, **settings)

    def dashboard(self, **settings: Any) -> Starlette:
        """The web dashboard as an ASGI app, to mount under a prefix of your web app
        (needs the ``dashboard`` extra). Credentials come from ``SHIGOTO_DASHBOARD_*``;
        ``settings`` are those of :func:`shigoto.dashboard.create_app`."""
        from .dashboard import create_app

        return create_app(self, **settings)

    # -- producing / consuming -----------------------------------------------------------

    def queue(self, name: str = "default", **defaults: Any) -> Queue:
        """The queue called ``name``; ``defaults`` (job options) apply to jobs added to it,
        and ``rate_limit_key=lambda data: ...`` gives its jobs their rate-limit group."""
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = Queue(self, name, defaults)
        elif defaults:
            if "rate_limit_key" in defaults:
                queue.rate_limit_key = defaults.pop("rate_limit_key")
            queue.defaults.update(option_overrides(**defaults))
        return queue

    def route(self, routing_key: str) -> Route:
        """Add jobs by routing key (``amqp://`` only): ``await
        app.route("orders.eu.created").add("charge", data)`` lands in every queue bound
        to a matching pattern with :meth:`bind_route`. See :mod:`shigoto.routing`."""
        from .routing import Route

        return Route(self, routing_key)

    async def bind_route(self, pattern: str, *, queue: str) -> None:
        """Let jobs routed with a key matching ``pattern`` (``orders.*.created``,
        ``audit.#``) land in ``queue`` too. Kept by the broker; binding twice is a
        no-op. ``amqp://`` only (``Capabilities.routing``)."""
        from .routing import require_routing, validate_pattern

        pattern = validate_pattern(pattern)
        name = self.queue(queue).name  # validates the queue name
        backend = require_routing(await self.backend())
        await backend.bind_route(name, pattern)
        await self.audit.record("route.bind", queue=name, details={"pattern": pattern})

    def bind_route_sync(self, pattern: str, *, queue: str) -> None:
        self.portal.call(self.bind_route, pattern, queue=queue)

    def worker(
        self,
        queues: Sequence[str] | str | None = None,
        concurrency: int = 10,
        **settings: Any,
    ) -> Worker:
        """A worker for ``queues`` (default: every queue a handler is registered on)."""
        from .worker import Worker, WorkerSettings

        if isinstance(queues, str):
            queues = [queues]
        names = list(queues) if queues else sorted({h.queue_name for h in self.handlers.values()})
        if not names:
            names = ["default"]
        try:
            worker_settings = WorkerSettings(**settings)
        except TypeError:
            known = sorted(WorkerSettings.__dataclass_fields__)
            unknown = sorted(set(settings) - set(known))
            raise ConfigurationError(
                f"unknown worker setting(s) {unknown}; known: {', '.join(known)}"
            ) from None
        return Worker(self, names, concurrency=concurrency, settings=worker_settings)

    # -- plumbing --------------------------------------------------------------------

    def actor(self, actor: str) -> contextlib.AbstractContextManager[str]:
        """``with app.actor("alice"): ...``: audit entries written and jobs enqueued in
        the block carry ``alice`` (jobs as ``ctx.actor``). A context variable, so
        concurrent tasks and threads keep their own."""
        return acting_as(actor)

    def encode_payload(
        self,
        name: str,
        data: Mapping[str, Any] | None,
        *,
        encrypt: Sequence[str] | None = None,
        allow_sensitive: Sequence[str] | None = None,
    ) -> bytes:
        """Job data as JSON bytes, with errors that name the job and the problem.

        The payload guard runs here (every enqueue path comes through), then the
        fields to encrypt are sealed (shigoto.security)."""
        if data is None:
            data = {}
        if type(data) is not dict and not isinstance(data, Mapping):  # ABC check is slow
            raise PayloadError(
                f"job {name!r}: data must be a mapping of argument names to values, "
                f"got {type(data).__name__}"
            )
        bad_keys = [k for k in data if not isinstance(k, str)]
        if bad_keys:
            raise PayloadError(f"job {name!r}: data keys must be strings, got {bad_keys!r}")
        try:
            payload = msgspec.json.encode(data)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise PayloadError(f"job {name!r}: data is not JSON-encodable: {exc}") from None
        payload = self.security.protect(
            name, data, payload, encrypt=encrypt, allow_sensitive=allow_sensitive
        )
        if len(payload) > self.max_payload_bytes:
            raise PayloadError(
                f"job {name!r}: data is {len(payload)} bytes, over the limit of "
                f"{self.max_payload_bytes} (pass ids and load big data in the handler)"
            )
        return payload

    async def backend(self) -> Backend:
        """The connected backend of the running event loop (one per loop)."""
        loop = asyncio.get_running_loop()
        backend = self._backends.get(loop)
        if backend is None:
            backend = open_backend(self.url)
            await backend.connect()
            # Another task of this loop may have connected meanwhile: keep one backend.
            existing = self._backends.get(loop)
            if existing is not None:
                await backend.close()
                return existing
            self._backends[loop] = backend
        return backend

    async def close(self) -> None:
        """Close this loop's backend connection (and the sync portal's, if any)."""
        backend = self._backends.pop(asyncio.get_running_loop(), None)
        if backend is not None:
            await backend.close()

    def close_sync(self) -> None:
        """Stop the sync portal and close its backend."""
        self.portal.close(self.close)

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
