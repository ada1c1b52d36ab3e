"""A registered job handler: the function, its defaults, and how to enqueue it."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import ConfigurationError
from .job import OPTION_NAMES, Job
from .retry import ShouldRetry

if TYPE_CHECKING:
    from .app import App

R = TypeVar("R")

ENQUEUE_PARAMS = frozenset({"job_id", "delay", "dedup_key", "dedup_ttl"}) | OPTION_NAMES
"""Keyword arguments of ``enqueue`` that are options, not job data."""


class JobHandler(Generic[R]):
    """What ``@app.job`` returns. Calling it runs the function directly (handy in tests);
    ``enqueue`` puts a job on its queue for a worker to run."""

    def __init__(
        self,
        app: App,
        fn: Callable[..., Any],
        *,
        name: str,
        queue: str,
        options: dict[str, Any],
        should_retry: ShouldRetry | None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue_name = queue
        self.options = options
        self.should_retry = should_retry
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = _data_signature(fn, name)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<JobHandler {self.name} queue={self.queue_name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def check_data(self, data: dict[str, Any]) -> None:
        """Fail at enqueue, not on a worker, when data does not fit the signature."""
        try:
            self.signature.bind(**data)
        except TypeError as exc:
            raise ConfigurationError(f"job {self.name!r}: {exc}") from None

    async def enqueue(self, **kwargs: Any) -> Job:
        """Enqueue with job data as keyword arguments; ``job_id``, ``delay``,
        ``dedup_key``, ``dedup_ttl``, ``priority``, ``attempts``, ``backoff``, ``timeout``,
        ``remove_on_*`` and ``max_stalls`` are options."""
        data = {k: v for k, v in kwargs.items() if k not in ENQUEUE_PARAMS}
        options = {k: v for k, v in kwargs.items() if k in ENQUEUE_PARAMS}
        self.check_data(data)
        return await self.app.queue(self.queue_name).add(self.name, data, **options)

    def enqueue_sync(self, **kwargs: Any) -> Job:
        """Blocking twin of :meth:`enqueue` for sync code."""
        return self.app.portal.call(self.enqueue, **kwargs)

    async def run_with(self, ctx: Any, data: dict[str, Any], executor: Executor) -> Any:
        """Run the function for one job (async directly, ``def`` on ``executor``)."""
        if self.is_async:
            return await self.fn(ctx, **data)
        call = functools.partial(contextvars.copy_context().run, self.fn, ctx, **data)
        return await asyncio.get_running_loop().run_in_executor(executor, call)


def _data_signature(fn: Callable[..., Any], name: str) -> inspect.Signature:
    """The handler's signature without ``ctx``: what job data must match."""
    if not callable(fn):
        raise ConfigurationError(f"@app.job needs a function, got {fn!r}")
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise ConfigurationError(
            f"job {name!r}: a handler takes the job context first, e.g. "
            f"`async def {getattr(fn, '__name__', name)}(ctx, user_id: int)`"
        )
    rest = params[1:]
    clash = sorted(p.name for p in rest if p.name in ENQUEUE_PARAMS)
    if clash:
        raise ConfigurationError(
            f"job {name!r}: parameter name(s) {clash} are enqueue options; rename them "
            "(or enqueue with queue.add(name, data) which keeps data and options apart)"
        )
    return inspect.Signature(rest)
