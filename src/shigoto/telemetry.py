"""OpenTelemetry for shigoto (``pip install 'shigoto[otel]'``): traces that cross the queue.

Turn it on once per process, producer and worker alike::

    from shigoto import telemetry
    telemetry.instrument()          # the global tracer/meter providers you configured
    # or: telemetry.instrument(tracer_provider=provider, meter_provider=meters)

Then:

* ``queue.add`` / ``handler.enqueue`` (and ``add_bulk``) run in a ``PRODUCER`` span
  ``enqueue <job name>``, a child of whatever span is current (a web request's). The
  span's W3C trace context (``traceparent`` / ``tracestate``) is stored with the job in
  reserved fields of :class:`~shigoto.job.JobOptions` — never in the job's data.
* Every execution attempt runs in a ``CONSUMER`` span ``run <job name>`` whose parent
  is that stored context, so the request's trace continues into its jobs (a retry is a
  second ``run`` span in the same trace). Spans the handler opens are its children.
* Attributes: ``messaging.system`` (``shigoto``), ``messaging.destination.name``
  (queue), ``messaging.message.id`` (job id), ``shigoto.job.name``,
  ``shigoto.job.attempt``; a failed attempt records its exception and ERROR status.
* Metrics (when a meter provider is available): ``shigoto.jobs.enqueued`` (counter)
  and ``shigoto.job.duration`` (histogram, seconds, with ``outcome`` = ``completed`` /
  ``failed``), next to the Prometheus metrics of :mod:`shigoto.metrics`.

Until :func:`instrument` is called the hooks below cost one global lookup, and
``opentelemetry`` is never imported. Handlers running with ``isolation="process"``
are traced by the worker's span around them; spans opened inside the child process
are not linked to it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .job import JobRecord

P = ParamSpec("P")
T = TypeVar("T")

SYSTEM = "shigoto"
INSTRUMENTATION = "shigoto"


class _State:
    """The tracer, meters and propagator in use while instrumented."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from . import __version__

        self.trace = trace
        self.tracer = trace.get_tracer(INSTRUMENTATION, __version__, tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION, __version__, meter_provider=meter_provider)
        self.enqueued = meter.create_counter(
            "shigoto.jobs.enqueued", unit="{job}", description="Jobs added to a queue."
        )
        self.duration = meter.create_histogram(
            "shigoto.job.duration", unit="s", description="Duration of one execution attempt."
        )
        self.propagator = TraceContextTextMapPropagator()


_state: _State | None = None


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Trace enqueues and attempts from now on (this process, every App).

    Without arguments the global OpenTelemetry providers are used (configure the SDK
    first); pass providers explicitly to keep shigoto's telemetry apart, as tests do.
    """
    global _state
    try:
        _state = _State(tracer_provider, meter_provider)
    except ImportError as exc:
        raise ConfigurationError(
            f"OpenTelemetry is not installed ({exc}); pip install 'shigoto[otel]'"
        ) from None


def uninstrument() -> None:
    """Stop tracing (hooks become no-ops again)."""
    global _state
    _state = None


def is_instrumented() -> bool:
    return _state is not None


# -- hooks called by the core ---------------------------------------------------------------


def trace_fields() -> dict[str, str]:
    """``JobOptions`` fields carrying the current trace context (empty when off)."""
    state = _state
    if state is None:
        return {}
    carrier: dict[str, str] = {}
    state.propagator.inject(carrier)
    return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}


def traced_enqueue(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wrap ``Queue.add`` / ``Queue.add_bulk``: one PRODUCER span per call."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        if _state is None:
            return fn(*args, **kwargs)
        return _enqueue(_state, fn, args, kwargs)

    return wrapper


async def _enqueue(
    state: _State, fn: Callable[..., Coroutine[Any, Any, T]], args: Any, kwargs: Any
) -> T:
    queue = args[0]
    name = args[1] if len(args) > 1 else kwargs.get("name")
    bulk = not isinstance(name, str)
    attributes: dict[str, str] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.destination.name": queue.name,
    }
    if not bulk:
        attributes["shigoto.job.name"] = str(name)
    with state.tracer.start_as_current_span(
        f"enqueue {queue.name}" if bulk else f"enqueue {name}",
        kind=state.trace.SpanKind.PRODUCER,
        attributes=attributes,
    ) as span:
        result = await fn(*args, **kwargs)
        if bulk:
            count = len(result) if isinstance(result, list) else 0
            span.set_attribute("messaging.batch.message_count", count)
        else:
            span.set_attribute("messaging.message.id", result.id)  # type: ignore[attr-defined]
            count = 1 if result.created else 0  # type: ignore[attr-defined]
            span.set_attribute("shigoto.job.created", bool(count))
        if count:
            state.enqueued.add(count, {"queue": queue.name})
        return result


def traced_attempt(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wrap ``Worker._call(record, lease, handler)``: one CONSUMER span per attempt."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        if _state is None:
            return fn(*args, **kwargs)
        return _attempt(_state, fn, args, kwargs)

    return wrapper


async def _attempt(
    state: _State, fn: Callable[..., Coroutine[Any, Any, T]], args: Any, kwargs: Any
) -> T:
    record: JobRecord = args[1]
    with _attempt_span(state, record):
        return await fn(*args, **kwargs)


@contextmanager
def _attempt_span(state: _State, record: JobRecord) -> Iterator[None]:
    carrier: Mapping[str, str] = {
        k: v
        for k, v in (
            ("traceparent", record.options.traceparent),
            ("tracestate", record.options.tracestate),
        )
        if v
    }
    parent = state.propagator.extract(carrier) if carrier else None
    attributes: dict[str, str | int] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": record.queue,
        "messaging.message.id": record.id,
        "shigoto.job.name": record.name,
        "shigoto.job.attempt": record.attempts,
    }
    started = time.perf_counter()
    outcome = "completed"
    with state.tracer.start_as_current_span(
        f"run {record.name}",
        context=parent,
        kind=state.trace.SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except Exception as exc:
            outcome = "failed"
            span.record_exception(exc)
            span.set_status(state.trace.Status(state.trace.StatusCode.ERROR, str(exc)[:200]))
            raise
        except BaseException:
            outcome = "interrupted"  # shutdown or lost lease: released, not failed
            span.set_attribute("shigoto.job.interrupted", True)
            raise
        finally:
            state.duration.record(
                time.perf_counter() - started,
                {"queue": record.queue, "job": record.name, "outcome": outcome},
            )
