"""OpenTelemetry: an enqueue span, one span per attempt, linked by the trace context
stored with the job, checked with the SDK's in-memory exporter and metric reader."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shigoto import App, telemetry
from shigoto.testing import run_until_empty

FAST: dict[str, Any] = {"lease_s": 1.0, "idle_wait_s": 0.05, "handle_signals": False}


class Otel:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


@pytest.fixture
def otel() -> Iterator[Otel]:
    state = Otel()
    telemetry.instrument(tracer_provider=state.tracer_provider, meter_provider=state.meter_provider)
    try:
        yield state
    finally:
        telemetry.uninstrument()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    instance = App(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        yield instance
    finally:
        await instance.close()


async def test_a_request_trace_continues_through_enqueue_into_the_attempt(
    app: App, otel: Otel
) -> None:
    @app.job(queue="mail")
    async def send(ctx: Any, user_id: int) -> int:
        with otel.tracer_provider.get_tracer("app").start_as_current_span("smtp"):
            return user_id

    request_tracer = otel.tracer_provider.get_tracer("web")
    with request_tracer.start_as_current_span("POST /signup") as request:
        job = await send.enqueue(user_id=7)
    record = await job.refresh()
    assert record.data == {"user_id": 7}  # the trace context is not in the user's data
    assert record.options.traceparent is not None
    assert f"{request.get_span_context().trace_id:032x}" in record.options.traceparent

    await run_until_empty(app, **FAST)
    assert await job.wait_until_finished(timeout=5) == 7

    [enqueue] = otel.spans("enqueue send")
    [attempt] = otel.spans("run send")
    [inner] = otel.spans("smtp")
    trace_id = request.get_span_context().trace_id
    assert {enqueue.context.trace_id, attempt.context.trace_id, inner.context.trace_id} == {
        trace_id
    }
    assert (
        enqueue.parent is not None and enqueue.parent.span_id == request.get_span_context().span_id
    )
    assert attempt.parent is not None and attempt.parent.span_id == enqueue.context.span_id
    assert inner.parent is not None and inner.parent.span_id == attempt.context.span_id
    assert enqueue.kind == SpanKind.PRODUCER and attempt.kind == SpanKind.CONSUMER
    assert dict(enqueue.attributes or {}) == {
        "messaging.system": "shigoto",
        "messaging.operation.type": "send",
        "messaging.destination.name": "mail",
        "shigoto.job.name": "send",
        "messaging.message.id": job.id,
        "shigoto.job.created": True,
    }
    assert dict(attempt.attributes or {}) == {
        "messaging.system": "shigoto",
        "messaging.operation.type": "process",
        "messaging.destination.name": "mail",
        "messaging.message.id": job.id,
        "shigoto.job.name": "send",
        "shigoto.job.attempt": 1,
    }
    assert attempt.status.status_code == StatusCode.UNSET


async def test_each_failed_attempt_records_its_exception(app: App, otel: Otel) -> None:
    @app.job(attempts=2, backoff=0.01)
    def flaky(ctx: Any) -> str:
        if ctx.attempt == 1:
            raise ConnectionError("smtp refused")
        return "sent"

    job = await flaky.enqueue()
    await run_until_empty(app, **FAST)
    assert await job.wait_until_finished(timeout=5) == "sent"

    first, second = sorted(otel.spans("run flaky"), key=lambda s: s.start_time or 0)
    assert first.attributes is not None and first.attributes["shigoto.job.attempt"] == 1
    assert second.attributes is not None and second.attributes["shigoto.job.attempt"] == 2
    assert first.status.status_code == StatusCode.ERROR
    [event] = first.events
    assert event.name == "exception" and event.attributes is not None
    assert event.attributes["exception.type"] == "ConnectionError"
    assert event.attributes["exception.message"] == "smtp refused"
    assert second.status.status_code == StatusCode.UNSET
    # both attempts continue the enqueue's trace
    [enqueue] = otel.spans("enqueue flaky")
    assert first.context.trace_id == second.context.trace_id == enqueue.context.trace_id


async def test_bulk_enqueue_is_one_span_and_metrics_are_recorded(app: App, otel: Otel) -> None:
    @app.job
    async def noop(ctx: Any, i: int) -> None:
        return None

    await app.queue().add_bulk({"name": "noop", "data": {"i": i}} for i in range(5))
    await run_until_empty(app, **FAST)
    [bulk] = otel.spans("enqueue default")
    assert bulk.attributes is not None and bulk.attributes["messaging.batch.message_count"] == 5
    attempts = otel.spans("run noop")
    assert len(attempts) == 5
    assert {a.parent.span_id for a in attempts if a.parent} == {bulk.context.span_id}

    metrics = otel.metrics()
    assert sum(p.value for p in metrics["shigoto.jobs.enqueued"]) == 5
    [histogram] = metrics["shigoto.job.duration"]
    assert histogram.count == 5
    assert dict(histogram.attributes) == {"queue": "default", "job": "noop", "outcome": "completed"}


async def test_nothing_is_traced_or_stored_until_instrumented(app: App) -> None:
    assert not telemetry.is_instrumented()

    @app.job
    async def plain(ctx: Any) -> str:
        return "ok"

    job = await plain.enqueue()
    record = await job.refresh()
    assert record.options.traceparent is None and record.options.tracestate is None
    await run_until_empty(app, **FAST)
    assert await job.wait_until_finished(timeout=5) == "ok"
