"""A registered job handler: the function, its defaults, and how to enqueue it.

``@app.job`` returns a :class:`JobHandler` that keeps the handler's signature for type
checkers (a ``ParamSpec`` without the leading ``ctx``) and its return type, so that::

    @app.job
    async def send_welcome(ctx: JobContext, user_id: int) -> str: ...

    job = await send_welcome.enqueue(user_id="x")        # mypy: incompatible type "str"
    job = await send_welcome.enqueue(user_id=1)          # Job[str]
    text = await job.wait_until_finished()               # str

Enqueue options (``delay``, ``priority``, ``job_id``...) go through
:meth:`JobHandler.with_options`, which type checkers see; passing them as keywords of
``enqueue`` next to the data still works at run time (it is how shigoto began), but a
type checker reports them, because they are not parameters of the handler.

Parameters annotated with a msgspec ``Struct``, a dataclass or a pydantic model (duck
typed: anything with ``model_validate`` / ``model_dump``; pydantic is never imported)
are validated at enqueue, stored as JSON objects, and rebuilt before the handler runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Executor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Concatenate, Generic, Protocol, overload

import msgspec

from .clock import Seconds
from .errors import ConfigurationError, PayloadError
from .job import OPTION_NAMES, Job, option_overrides, validate_delay, validate_job_id
from .retry import Backoff, ShouldRetry

if TYPE_CHECKING:
    from typing_extensions import ParamSpec, TypeVar

    from .app import App
    from .job import RetentionSpec
    from .limits import GroupKey

    R = TypeVar("R", default=Any)
    P = ParamSpec("P", default=...)
else:  # type-parameter defaults (PEP 696) exist for type checkers only before 3.13
    from typing import ParamSpec, TypeVar

    R = TypeVar("R")
    P = ParamSpec("P")

R2 = TypeVar("R2")
P2 = ParamSpec("P2")

ENQUEUE_PARAMS = (
    frozenset({"job_id", "delay", "dedup_key", "dedup_ttl", "encrypt", "allow_sensitive"})
    | OPTION_NAMES
)
"""Keyword arguments of ``enqueue`` that are options, not job data."""

_REPR_LIMIT = 120


class JobHandler(Generic[R, P]):
    """What ``@app.job`` returns. Calling it runs the function directly (handy in tests);
    ``enqueue`` puts a job on its queue for a worker to run.

    Type parameters: ``R`` is the handler's result (what ``Job[R].wait_until_finished()``
    returns), ``P`` its parameters after ``ctx``. ``JobHandler[Any]`` is any handler.
    """

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
        self.isolation: str | None = None
        """``"process"``: runs in a pooled child process (see :mod:`shigoto.isolation`)."""
        self.rate_limit_key: GroupKey | None = None
        """``data -> group``: the rate-limit group of each job (see :mod:`shigoto.limits`)."""
        self.signature = _data_signature(fn, name)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<JobHandler {self.name} queue={self.queue_name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def check_data(self, data: Mapping[str, Any]) -> None:
        """Fail at enqueue, not on a worker, when data does not fit the signature."""
        try:
            self.signature.bind(**data)
        except TypeError as exc:
            raise ConfigurationError(f"job {self.name!r}: {exc}") from None

    def prepare(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Job data for a call with ``args`` and ``kwargs``: positional arguments named,
        the signature checked, model arguments validated and turned into JSON objects."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"job {self.name!r}: {exc}") from None
        data: dict[str, Any] = {}
        for pname, value in bound.arguments.items():
            kind = self.signature.parameters[pname].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                if value:
                    raise ConfigurationError(
                        f"job {self.name!r}: extra positional arguments {value!r} cannot be "
                        "stored as job data; pass them by keyword"
                    )
            elif kind is inspect.Parameter.VAR_KEYWORD:
                data.update(value)
            else:
                data[pname] = value
        for pname, model in self._models.items():
            if pname in data:
                data[pname] = _model_to_json(self.name, pname, model, data[pname])
        return data

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Enqueue a job with the handler's arguments (without ``ctx``) as its data.

        For options use :meth:`with_options`. For backward compatibility ``job_id``,
        ``delay``, ``dedup_key``, ``dedup_ttl``, ``priority``, ``attempts``, ``backoff``,
        ``timeout``, ``remove_on_*`` and ``max_stalls`` given here are options too.
        """
        data = {k: v for k, v in kwargs.items() if k not in ENQUEUE_PARAMS}
        options = {k: v for k, v in kwargs.items() if k in ENQUEUE_PARAMS}
        return await self._add(args, data, options)

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Blocking twin of :meth:`enqueue` for sync code (Django, Flask, scripts)."""
        return self.app.portal.call(self.enqueue, *args, **kwargs)

    def with_options(
        self,
        *,
        job_id: str | None = None,
        delay: Seconds | None = None,
        priority: int | None = None,
        attempts: int | None = None,
        backoff: Backoff | float | timedelta | None = None,
        timeout: Seconds | None = None,
        dedup_key: str | None = None,
        dedup_ttl: Seconds | None = None,
        remove_on_complete: RetentionSpec | None = None,
        remove_on_fail: RetentionSpec | None = None,
        max_stalls: int | None = None,
        encrypt: Sequence[str] | None = None,
        allow_sensitive: Sequence[str] | None = None,
        group: str | None = None,
    ) -> BoundEnqueue[R, P]:
        """Options for one enqueue, checked now:
        ``await send_welcome.with_options(delay=5, priority=1).enqueue(user_id=1)``."""
        given = {
            "job_id": job_id,
            "delay": delay,
            "priority": priority,
            "attempts": attempts,
            "backoff": backoff,
            "timeout": timeout,
            "dedup_key": dedup_key,
            "dedup_ttl": dedup_ttl,
            "remove_on_complete": remove_on_complete,
            "remove_on_fail": remove_on_fail,
            "max_stalls": max_stalls,
            "encrypt": encrypt,
            "allow_sensitive": allow_sensitive,
            "group": group,
        }
        options = {k: v for k, v in given.items() if v is not None}
        option_overrides(**{k: v for k, v in options.items() if k in OPTION_NAMES})
        validate_delay(delay)
        validate_job_id(job_id)
        return BoundEnqueue(self, options)

    async def _add(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], options: Mapping[str, Any]
    ) -> Job[R]:
        data = self.prepare(args, kwargs)
        job: Job[R] = await self.app.queue(self.queue_name).add(self.name, data, **options)
        return job

    async def run_with(self, ctx: Any, data: dict[str, Any], executor: Executor) -> Any:
        """Run the function for one job (async directly, ``def`` on ``executor``)."""
        if self._models:
            data = self._rebuild_models(data)
        if self.is_async:
            return await self.fn(ctx, **data)
        call = functools.partial(contextvars.copy_context().run, self.fn, ctx, **data)
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    def decode_result(self, value: Any) -> Any:
        """A stored (JSON) result as the handler's declared return type, when that is a
        Struct, dataclass or pydantic model; other results are returned as decoded."""
        model = self._result_model
        if model is None or value is None:
            return value
        try:
            return _model_from_json(model, value)
        except (msgspec.ValidationError, ValueError, TypeError):
            return value

    def _rebuild_models(self, data: dict[str, Any]) -> dict[str, Any]:
        out = dict(data)
        for pname, model in self._models.items():
            if pname in out and isinstance(out[pname], dict):
                try:
                    out[pname] = _model_from_json(model, out[pname])
                except (msgspec.ValidationError, ValueError, TypeError) as exc:
                    from .worker import BadPayload

                    raise BadPayload(
                        f"job {self.name!r}: stored argument {pname!r} is not a valid "
                        f"{model.__name__}: {exc}"
                    ) from None
        return out

    @functools.cached_property
    def _hints(self) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self.fn)
        except Exception:  # forward references that do not resolve: no model support
            return {}

    @functools.cached_property
    def _models(self) -> dict[str, type]:
        """Parameters annotated with a model type (``T`` or ``T | None``)."""
        out: dict[str, type] = {}
        for pname in self.signature.parameters:
            model = _model_type(self._hints.get(pname))
            if model is not None:
                out[pname] = model
        return out

    @functools.cached_property
    def _result_model(self) -> type | None:
        return _model_type(self._hints.get("return"))


class BoundEnqueue(Generic[R, P]):
    """A handler with options for one enqueue; see :meth:`JobHandler.with_options`."""

    __slots__ = ("handler", "options")

    def __init__(self, handler: JobHandler[R, P], options: dict[str, Any]) -> None:
        self.handler = handler
        self.options = options

    def __repr__(self) -> str:
        return f"<BoundEnqueue {self.handler.name} {self.options}>"

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return await self.handler._add(args, kwargs, self.options)

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return self.handler.app.portal.call(self.enqueue, *args, **kwargs)


class JobDecorator(Protocol):
    """What ``@app.job(...)`` with options returns: a decorator keeping types."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, P2], Coroutine[Any, Any, R2]], /
    ) -> JobHandler[R2, P2]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P2], R2], /) -> JobHandler[R2, P2]: ...


# -- model arguments ----------------------------------------------------------------------


def _is_model(tp: Any) -> bool:
    if not isinstance(tp, type):
        return False
    if issubclass(tp, msgspec.Struct) or dataclasses.is_dataclass(tp):
        return True
    return callable(getattr(tp, "model_validate", None)) and callable(
        getattr(tp, "model_dump", None)
    )


def _model_type(hint: Any) -> type | None:
    """``T`` when ``hint`` is a model type ``T`` or ``T | None``."""
    if _is_model(hint):
        return typing.cast(type, hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if (
        len(args) == 1
        and typing.get_origin(hint) in (typing.Union, _UnionType)
        and _is_model(args[0])
    ):
        return typing.cast(type, args[0])
    return None


_UnionType = type(int | None)


def _is_pydantic(model: type) -> bool:
    return not issubclass(model, msgspec.Struct) and not dataclasses.is_dataclass(model)


def _model_from_json(model: type, value: Any) -> Any:
    if _is_pydantic(model):
        return model.model_validate(value)  # type: ignore[attr-defined]
    return msgspec.convert(value, model)


def _model_to_json(job: str, param: str, model: type, value: Any) -> Any:
    """A model argument as a JSON object, validated; a clear error when it is not one."""
    if value is None:
        return None
    try:
        if not isinstance(value, model):
            if not isinstance(value, Mapping):
                raise TypeError(f"expected a {model.__name__} or a dict of its fields")
            value = _model_from_json(model, dict(value))
        if _is_pydantic(model):
            return value.model_dump(mode="json")
        return msgspec.to_builtins(value)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        shown = repr(value)
        if len(shown) > _REPR_LIMIT:
            shown = shown[:_REPR_LIMIT] + "..."
        raise PayloadError(
            f"job {job!r}: argument {param!r} is not a valid {model.__name__}: "
            f"{str(exc).strip()}; got {shown}"
        ) from None


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
