"""Prometheus exposition: ``/metrics`` in the text format, built with prometheus-client.

Everything is read from the backend at scrape time, so one exporter (``shigoto metrics
--port 9808``, or :func:`metrics_asgi` mounted in your ASGI app) shows every worker's
work, and workers expose nothing themselves.

* gauges: jobs per queue and state, paused queues, live workers by status, alert states;
* counters: completed / failed / retried / dead / slow attempts per queue and job name,
  read from the backend's lifetime totals (``Backend.read_metric_totals``), which are
  never pruned: a counter only goes down if the backend's data is deleted;
* histograms: processing and wait time per queue and job name, on the fixed buckets of
  :data:`shigoto.metrics.BOUNDS_MS`, from the same totals (so monotonic too).

Job-name labels are capped per queue (``max_job_labels``): the busiest names keep their
own series, the rest are summed under ``job="other"``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .alerts import AlertStatus
from .job import JobState
from .metrics import BOUNDS_MS, QueueMetrics, add_values, histogram, worker_health

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)

DEFAULT_PORT = 9808
MAX_JOB_LABELS = 50
COUNTERS = (
    ("completed", "Attempts that completed."),
    ("failed", "Attempts that failed (retried or dead)."),
    ("retried", "Failed attempts that were scheduled for a retry."),
    ("dead", "Jobs that went to the dead-letter queue."),
    ("slow", "Attempts that ran longer than their handler's target (granularity guard)."),
)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _cap(per_name: dict[str, dict[str, int]], limit: int) -> dict[str, dict[str, int]]:
    if len(per_name) <= limit:
        return per_name
    ranked = sorted(
        per_name, key=lambda n: -(per_name[n].get("completed", 0) + per_name[n].get("failed", 0))
    )
    kept = {name: per_name[name] for name in ranked[: limit - 1]}
    kept["other"] = add_values(per_name[name] for name in ranked[limit - 1 :])
    return kept


NAME_STATES = ("waiting", "delayed", "active", "dead")


def _cap_by_total(per_name: dict[str, dict[str, int]], limit: int) -> dict[str, dict[str, int]]:
    if len(per_name) <= limit:
        return per_name
    ranked = sorted(per_name, key=lambda n: -sum(per_name[n].values()))
    kept = {name: per_name[name] for name in ranked[: limit - 1]}
    kept["other"] = add_values(per_name[name] for name in ranked[limit - 1 :])
    return kept


def _buckets(values: dict[str, int], kind: str) -> list[tuple[str, float]]:
    counts = histogram(values, kind)
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(BOUNDS_MS, counts, strict=False):
        running += count
        out.append((repr(bound / 1000), float(running)))
    out.append(("+Inf", float(running + counts[-1])))
    return out


async def collect(app: App, *, max_job_labels: int = MAX_JOB_LABELS) -> list[Metric]:
    """Every metric family, read from the backend now."""
    backend = await app.backend()
    jobs = GaugeMetricFamily("shigoto_jobs", "Jobs per queue and state.", labels=["queue", "state"])
    paused = GaugeMetricFamily(
        "shigoto_queue_paused", "1 when the queue is paused.", labels=["queue"]
    )
    counters = {
        key: CounterMetricFamily(f"shigoto_jobs_{key}", text, labels=["queue", "job"])
        for key, text in COUNTERS
    }
    processing = HistogramMetricFamily(
        "shigoto_job_processing_seconds", "Handler run time per attempt.", labels=["queue", "job"]
    )
    waiting = HistogramMetricFamily(
        "shigoto_job_wait_seconds", "Time from ready to started.", labels=["queue", "job"]
    )
    per_job = GaugeMetricFamily(
        "shigoto_job_jobs",
        "Jobs per queue, job name and state (waiting, delayed, active, dead).",
        labels=["queue", "job", "state"],
    )
    for queue in await backend.queues():
        by_name = await backend.counts_by_name(queue)
        named = {
            name: {state.value: n for state, n in per.items()}
            for name, per in by_name.counts.items()
        }
        for name, per_state in sorted(_cap_by_total(named, max_job_labels).items()):
            for state in NAME_STATES:
                per_job.add_metric([queue, name, state], per_state.get(state, 0))
        counts = await backend.counts(queue)
        for state in JobState:
            jobs.add_metric([queue, state.value], counts[state])
        paused.add_metric([queue], 1.0 if await backend.is_paused(queue) else 0.0)
        totals = _cap(await QueueMetrics(app, queue).totals(), max_job_labels)
        for name, values in sorted(totals.items()):
            for key, _ in COUNTERS:
                counters[key].add_metric([queue, name], values.get(key, 0))
            for family, kind in ((processing, "run"), (waiting, "wait")):
                family.add_metric(
                    [queue, name],
                    buckets=_buckets(values, kind),
                    sum_value=values.get(f"{kind}_ms", 0) / 1000,
                )
    workers = GaugeMetricFamily("shigoto_workers", "Live workers by status.", labels=["status"])
    by_status = {"ok": 0, "idle": 0, "stuck": 0}
    for health in await worker_health(app):
        by_status[health.status] = by_status.get(health.status, 0) + 1
    for status, count in by_status.items():
        workers.add_metric([status], count)
    alerts = GaugeMetricFamily(
        "shigoto_alert_firing", "1 while an alert rule fires on a queue.", labels=["rule", "queue"]
    )

    for stored in await backend.alert_states():
        alert = msgspec.json.decode(stored.state, type=AlertStatus)
        alerts.add_metric([alert.rule, alert.queue], 1.0 if alert.state == "firing" else 0.0)
    return [jobs, per_job, paused, *counters.values(), processing, waiting, workers, alerts]


async def render(app: App, *, max_job_labels: int = MAX_JOB_LABELS) -> bytes:
    """The Prometheus text format of :func:`collect`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(await collect(app, max_job_labels=max_job_labels)))
    return generate_latest(registry)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def metrics_asgi(app: App, *, max_job_labels: int = MAX_JOB_LABELS) -> Callable[..., Any]:
    """An ASGI app answering every GET with the metrics (mount it at ``/metrics``)."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            status, headers, body = 405, [(b"allow", b"GET")], b"method not allowed\n"
        else:
            try:
                status, body = 200, await render(app, max_job_labels=max_job_labels)
            except Exception as exc:
                log.exception("metrics collection failed")
                status, body = 503, f"metrics unavailable: {exc}\n".encode()
            headers = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return asgi


async def serve(app: App, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """A minimal HTTP server for ``/metrics`` (no ASGI server needed); runs until
    cancelled."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path.split("?")[0] in ("/metrics", "/"):
                try:
                    status, ctype = "200 OK", CONTENT_TYPE_LATEST
                    body = await render(app)
                except Exception as exc:
                    log.exception("metrics collection failed")
                    status, ctype = "503 Service Unavailable", "text/plain"
                    body = f"metrics unavailable: {exc}\n".encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()
