"""What the dashboard shows, read through shigoto's public API only.

Each function returns plain JSON-able data: the JSON API serves it as is and the HTML
pages render it, so the two can never disagree. Nothing here writes.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from ..errors import ConfigurationError
from ..job import JobRecord, JobState
from ..security.encryption import redact

if TYPE_CHECKING:
    from ..app import App

STATES = [state.value for state in JobState]
NAME_STATES = ("waiting", "delayed", "active", "dead")
"""The states counted per job name (the live ones, and dead letters)."""
PAGE_SIZE = 25
NAME_SCAN_LIMIT = 5_000
"""Jobs read at most to answer a name filter (the backend lists by state only)."""
CHART_WINDOW_MS = 3_600_000
CHART_BUCKET_MS = 60_000
CHART_SCAN_LIMIT = 2_000
MASK = "••••••"
SENSITIVE = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|auth|credential|card|cvv|cvc|ssn|private[_-]?key",
    re.IGNORECASE,
)


def redacted_url(url: str) -> str:
    """The backend URL without its password (``redis://:***@host``): shown on pages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# -- queues ---------------------------------------------------------------------------


async def queue_names(app: App) -> list[str]:
    return sorted(await (await app.backend()).queues())


async def queue_summary(app: App, name: str) -> dict[str, Any]:
    queue = app.queue(name)
    counts = await queue.counts()
    return {
        "name": name,
        "counts": counts,
        "total": sum(counts.values()),
        "paused": await queue.is_paused(),
    }


async def jobs_by_name(app: App, queue: str) -> dict[str, Any]:
    """Per job name, how many jobs wait, are delayed, run and are dead now, busiest
    first, so the queue page shows which job fills the queue."""
    found = await (await app.backend()).counts_by_name(queue)
    busiest = sorted(found.counts.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    rows = [
        {"name": name} | {state: per.get(JobState(state), 0) for state in NAME_STATES}
        for name, per in busiest
    ]
    return {"rows": rows, "complete": found.complete}


async def overview(app: App) -> dict[str, Any]:
    queues = [await queue_summary(app, name) for name in await queue_names(app)]
    totals: Counter[str] = Counter()
    for queue in queues:
        totals.update(queue["counts"])
    return {
        "url": redacted_url(app.url),
        "queues": queues,
        "totals": {state: totals.get(state, 0) for state in STATES},
        "alerts": await alerts(app, [q["name"] for q in queues]),
    }


async def job_page(
    app: App, queue: str, state: str, *, page: int = 1, name: str = "", size: int = PAGE_SIZE
) -> dict[str, Any]:
    """One page of a queue's jobs in ``state``, optionally only those called ``name``."""
    if state not in STATES:
        raise ConfigurationError(f"unknown state {state!r}; known: {', '.join(STATES)}")
    page = max(1, page)
    q = app.queue(queue)
    offset = (page - 1) * size
    if not name:
        records = await q.jobs(state, offset=offset, limit=size + 1)
        more = len(records) > size
        records = records[:size]
    else:
        # The backend lists by state only: scan (bounded) and filter by name here.
        matched: list[JobRecord] = []
        scanned = 0
        while scanned < NAME_SCAN_LIMIT and len(matched) <= offset + size:
            batch = await q.jobs(state, offset=scanned, limit=500)
            scanned += len(batch)
            matched += [r for r in batch if r.name == name]
            if len(batch) < 500:
                break
        records = matched[offset : offset + size]
        more = len(matched) > offset + size
    return {
        "queue": queue,
        "state": state,
        "page": page,
        "size": size,
        "name": name,
        "more": more,
        "jobs": [job_row(r) for r in records],
    }


def job_row(record: JobRecord) -> dict[str, Any]:
    last = record.last_error
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state.value,
        "attempts": record.attempts,
        "max_attempts": record.options.attempts,
        "priority": record.priority,
        "created_ms": record.created_ms,
        "ready_ms": record.ready_ms,
        "finished_ms": record.finished_ms,
        "duration_ms": record.duration_ms,
        "progress": _progress_percent(record),
        "error": None if last is None else f"{last.error_type}: {last.message}",
        "reason": record.reason,
    }


# -- one job --------------------------------------------------------------------------


def mask(value: Any) -> Any:
    """Job data with the values of sensitive-looking keys hidden (recursively)."""
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and SENSITIVE.search(k) else mask(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


def _decoded(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw.decode("utf-8", "replace")


def _progress_percent(record: JobRecord) -> float | None:
    """Progress as 0-100 for the bar (a completed job is done, whatever it reported)."""
    if record.state is JobState.COMPLETED:
        return 100.0
    value = _decoded(record.progress)
    if isinstance(value, dict):
        value = value.get("percent", value.get("progress"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(0.0, min(100.0, float(value)))
    return None


async def job_detail(app: App, queue: str, job_id: str) -> dict[str, Any] | None:
    job = await app.queue(queue).get_job(job_id)
    if job is None or job.record is None:
        return None
    record = job.record
    data = _decoded(record.payload)
    attempts = [
        msgspec.to_builtins(error) | {"kind": "note" if error.attempt == 0 else "attempt"}
        for error in record.errors
    ]
    return {
        **job_row(record),
        "queue": record.queue,
        "data": mask(redact(data)),  # encrypted fields show as «encrypted»
        "options": msgspec.to_builtins(record.options),
        "options_text": options_text(record),
        "progress_value": mask(_decoded(record.progress)),
        "result": mask(_decoded(record.result)),
        "stalls": record.stalls,
        "started_ms": record.started_ms,
        "worker_id": record.worker_id,
        "lease_until_ms": record.lease_until_ms,
        "cancel_requested": record.cancel_requested,
        "attempt_errors": attempts,
        "timeline": sorted(
            timeline(record) + await job_audit(app, job_id), key=lambda e: int(e["at_ms"])
        ),
    }


async def job_audit(app: App, job_id: str) -> list[dict[str, Any]]:
    """The job's audit entries (who enqueued, cancelled, redrove, ran it) as timeline
    events; empty where the audit trail is not installed."""
    query = getattr(getattr(app, "audit", None), "query", None)
    if query is None:
        return []
    try:
        entries = await query(job_id=job_id, limit=100)
    except Exception:
        return []
    return [
        {"at_ms": int(entry.at_ms), "event": f"{entry.action} by {entry.actor}", "audit": True}
        for entry in reversed(entries)  # oldest first, so equal times keep their order
    ]


def options_text(record: JobRecord) -> dict[str, str]:
    """The job's options in words (the phrasing of ``shigoto jobs show``)."""
    from ..cli.render import fmt_retention

    options = record.options
    backoff = options.backoff
    return {
        "attempts": str(options.attempts),
        "backoff": f"{backoff.kind} from {backoff.delay_s:g} s"
        + (f", max {backoff.max_delay_s:g} s" if backoff.max_delay_s is not None else "")
        + (f", jitter {backoff.jitter:g}" if backoff.jitter else ""),
        "timeout": "none" if options.timeout_s is None else f"{options.timeout_s:g} s",
        "priority": str(options.priority),
        "max stalls": str(options.max_stalls),
        "on complete": fmt_retention(options.remove_on_complete),
        "on failure": fmt_retention(options.remove_on_fail),
    }


def timeline(record: JobRecord) -> list[dict[str, Any]]:
    """State changes we can reconstruct from the record, oldest first."""
    events: list[dict[str, Any]] = [{"at_ms": record.created_ms, "event": "added"}]
    if record.ready_ms > record.created_ms + 5:
        events.append({"at_ms": record.ready_ms, "event": "ready to run"})
    for error in record.errors:
        if error.attempt == 0:
            events.append({"at_ms": error.ended_ms, "event": error.message})
            continue
        if error.started_ms is not None:
            events.append({"at_ms": error.started_ms, "event": f"attempt {error.attempt} started"})
        events.append(
            {
                "at_ms": error.ended_ms,
                "event": f"attempt {error.attempt} failed: {error.error_type}",
            }
        )
    if record.started_ms is not None and not any(e["at_ms"] == record.started_ms for e in events):
        events.append({"at_ms": record.started_ms, "event": f"attempt {record.attempts} started"})
    if record.finished_ms is not None:
        events.append(
            {
                "at_ms": record.finished_ms,
                "event": record.state.value + (f" ({record.reason})" if record.reason else ""),
            }
        )
    return sorted(events, key=lambda e: int(e["at_ms"]))


# -- dead letters ---------------------------------------------------------------------


async def dead_letters(app: App, queue: str, *, cursor: str | None = None) -> dict[str, Any]:
    q = app.queue(queue)
    report = await q.dead_letter_groups(scan_limit=5_000, samples=5)
    page = await q.dead_letters(cursor=cursor or None, limit=50)
    return {
        "queue": queue,
        "total_dead": report.total_dead,
        "complete": report.complete,
        "groups": msgspec.to_builtins(report.groups),
        "items": [
            {
                "id": letter.id,
                "name": letter.name,
                "reason": letter.reason,
                "attempts": letter.attempts,
                "finished_ms": letter.finished_ms,
                "error": None
                if letter.last_error is None
                else f"{letter.last_error.error_type}: {letter.last_error.message}",
            }
            for letter in page.items
        ],
        "cursor": page.cursor,
    }


# -- schedules and workers -------------------------------------------------------------


async def schedules(app: App, now_ms: int) -> dict[str, Any]:
    """What ``shigoto schedules`` lists (the same code)."""
    from ..cli.scheduler import gather

    try:
        rows = await gather(app, now_ms, with_code=bool(app.schedules.declared))
    except ConfigurationError as exc:
        return {"schedules": [], "unsupported": str(exc)}
    return {"schedules": rows, "unsupported": None}


async def workers(app: App, now_ms: int) -> dict[str, Any]:
    """Workers seen holding a lease: every active job names its worker and lease end.

    Idle workers hold no lease and do not appear; this view is what every backend can
    answer through the public API until workers announce themselves.
    """
    seen: dict[str, dict[str, Any]] = {}
    for name in await queue_names(app):
        for record in await app.queue(name).jobs(JobState.ACTIVE, limit=1000):
            worker_id = record.worker_id or "?"
            row = seen.setdefault(
                worker_id,
                {"id": worker_id, "queues": [], "jobs": [], "lease_until_ms": 0},
            )
            if name not in row["queues"]:
                row["queues"].append(name)
            row["jobs"].append(
                {
                    "queue": name,
                    "id": record.id,
                    "name": record.name,
                    "started_ms": record.started_ms,
                    "progress": _progress_percent(record),
                }
            )
            row["lease_until_ms"] = max(row["lease_until_ms"], record.lease_until_ms or 0)
    rows = sorted(seen.values(), key=lambda r: str(r["id"]))
    for row in rows:
        row["alive"] = row["lease_until_ms"] >= now_ms
    return {"workers": rows, "source": "leases of active jobs"}


# -- charts, metrics and alerts (shigoto.metrics / shigoto.alerts) ----------------------


async def activity(app: App, queue: str, now_ms: int) -> dict[str, Any]:
    """Completions and failed attempts per minute over the last hour, with the queue's
    metrics snapshot (rates, p50/p95, wait time).

    From the metrics workers record (``app.metrics(queue).series()``); on a backend
    without metrics, estimated from the jobs the queue still keeps.
    """
    series = await _metric_series(app, queue)
    if series is not None:
        start, done, failed = series
        source = "metrics"
    else:
        start, done, failed = await _scanned_series(app, queue, now_ms)
        source = "retained jobs"
    rate = [
        None if d + f == 0 else round(100 * f / (d + f), 1)
        for d, f in zip(done, failed, strict=True)
    ]
    return {
        "queue": queue,
        "start_ms": start,
        "bucket_ms": CHART_BUCKET_MS,
        "completed": done,
        "failed": failed,
        "failure_rate": rate,
        "source": source,
        "metrics": await metrics_snapshot(app, queue),
    }


async def _metric_series(app: App, queue: str) -> tuple[int, list[int], list[int]] | None:
    try:
        points = await app.metrics(queue).series("minute", last=CHART_WINDOW_MS // CHART_BUCKET_MS)
    except Exception:  # a backend without metrics: fall back to scanning jobs
        return None
    if not points:
        return None
    return points[0].start_ms, [p.completed for p in points], [p.failed for p in points]


async def _scanned_series(app: App, queue: str, now_ms: int) -> tuple[int, list[int], list[int]]:
    """Completions and failed attempts per minute from the jobs still stored (bounded)."""
    start = now_ms - CHART_WINDOW_MS
    buckets = CHART_WINDOW_MS // CHART_BUCKET_MS
    done = [0] * buckets
    failed = [0] * buckets

    def slot(at_ms: int | None) -> int | None:
        if at_ms is None or at_ms < start or at_ms >= now_ms:
            return None
        return int((at_ms - start) // CHART_BUCKET_MS)

    q = app.queue(queue)
    for state in (JobState.COMPLETED, JobState.DEAD, JobState.DELAYED, JobState.WAITING):
        for record in await q.jobs(state, limit=CHART_SCAN_LIMIT):
            if state is JobState.COMPLETED and (i := slot(record.finished_ms)) is not None:
                done[i] += 1
            for error in record.errors:
                if error.attempt > 0 and (i := slot(error.ended_ms)) is not None:
                    failed[i] += 1
    return start, done, failed


async def metrics_snapshot(app: App, queue: str) -> dict[str, Any] | None:
    """The queue's metrics snapshot as plain data (None where metrics are unavailable)."""
    try:
        from ..metrics import describe

        snapshot = await app.metrics(queue).snapshot()
        data = describe(snapshot)
    except Exception:  # degrade: counts and charts still work without metrics
        return None
    return {
        "backlog": data.get("backlog"),
        "completed_5m": snapshot.completed,
        "failed_5m": snapshot.failed,
        "failure_rate": snapshot.failure_rate,
        "throughput_per_min": round(snapshot.throughput_per_min, 2),
        "processing_p50_s": snapshot.processing.p50_s,
        "processing_p95_s": snapshot.processing.p95_s,
        "wait_avg_s": snapshot.wait.avg_s,
        "delay_s": snapshot.delay_s,
    }


async def alerts(app: App, queues: list[str]) -> list[dict[str, Any]]:
    """Alert rules not in the ``ok`` state (firing or pending), from shigoto.alerts."""
    try:
        from ..alerts import Monitor

        rule_views = await Monitor(app, queues=queues or None).views()
    except Exception:  # no alerting on this backend (or no queues): show none
        return []
    out = []
    for view in rule_views:
        if view.state not in ("pending", "firing"):
            continue
        out.append(
            {
                "queue": view.queue,
                "rule": view.rule.name,
                "state": str(view.state),
                "value": view.value,
                "threshold": view.rule.threshold,
                "summary": view.rule.summary,
                "since_ms": None if view.status is None else view.status.since_ms,
            }
        )
    return out


async def worker_list(app: App, now_ms: int) -> dict[str, Any]:
    """Live workers from their liveness beats (shigoto.metrics), with their current
    jobs; on a backend without liveness, the workers seen holding leases."""
    leased = await workers(app, now_ms)
    try:
        from ..metrics import worker_health

        health = await worker_health(app)
    except Exception:
        return leased
    jobs = {row["id"]: row["jobs"] for row in leased["workers"]}
    rows = [
        {
            "id": h.info.id,
            "host": h.info.host,
            "pid": h.info.pid,
            "queues": h.info.queues,
            "concurrency": h.info.concurrency,
            "running": h.info.running,
            "processed": h.info.processed,
            "failed": h.info.failed,
            "started_ms": h.info.started_ms,
            "beat_ms": h.info.beat_ms,
            "last_claim_ms": h.info.last_claim_ms,
            "status": h.status,
            "jobs": jobs.get(h.info.id, []),
            "alive": True,
        }
        for h in health
    ]
    return {"workers": sorted(rows, key=lambda r: str(r["id"])), "source": "liveness beats"}


# -- audit ----------------------------------------------------------------------------


async def audit_log(
    app: App,
    journal: list[dict[str, Any]],
    *,
    limit: int = 100,
    actor: str = "",
    action: str = "",
) -> dict[str, Any]:
    """The audit trail (``app.audit``, shigoto.security) newest first, or, where it is
    not installed, the actions taken in this dashboard process."""
    query = getattr(getattr(app, "audit", None), "query", None)
    if query is None:
        rows = [
            e
            for e in journal
            if (not actor or e["user"] == actor) and (not action or e["action"] == action)
        ]
        return {"source": "this dashboard process", "entries": rows[:limit]}
    try:
        entries = await query(limit=limit, actor=actor or None, action=action or None)
    except Exception:  # the trail is unavailable on this backend: show what we have
        return {"source": "this dashboard process", "entries": journal[:limit]}
    rows = []
    for entry in entries:
        data = msgspec.to_builtins(entry)
        details = _decoded(entry.details) if entry.details else {}
        details = details if isinstance(details, dict) else {"value": details}
        rows.append(
            {
                "at_ms": data.get("at_ms"),
                "user": data.get("actor", ""),
                "role": str(details.get("role", "")),
                "action": data.get("action", ""),
                "queue": data.get("queue") or "",
                "target": data.get("job_id") or str(details.get("target", "")),
                "job_id": data.get("job_id"),
            }
        )
    return {"source": "audit trail", "entries": rows}
