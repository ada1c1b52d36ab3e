"""Metrics, worker liveness and alert states on Redis.

* **Metric buckets** are hashes ``{prefix:queue}:metrics:<width>:<start_ms>`` holding
  ``<job name>|<field>`` -> integer, under the queue's hash tag (one slot per queue, like
  every other key of the queue). A flush is one ``metrics_record.lua`` call per queue:
  ``HINCRBY`` per field and ``PEXPIRE`` until the end of the bucket's retention, so
  storage is bounded by expiry with no index to trim.
* **Lifetime totals** are one more hash per queue, ``{prefix:queue}:metric_totals``, of
  the same ``<job name>|<field>`` layout, incremented in the same script call (one more
  ``HINCRBY`` per field) and never expiring: bounded by job names x fields, and never
  going down, so the exporter's counters are monotonic.
* **Reads** name the bucket keys of the range (at most 1,440 minutes or 720 hours) and
  fetch them in one ``metrics_read.lua`` call.
* **Worker beats and alert states** belong to no queue: they live under ``{prefix}``
  (their own slot), in small hashes, written by one script per transition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ...job import JobState
from ..contract import (
    ALERT_HISTORY,
    HOUR_MS,
    HOUR_RETENTION_MS,
    MINUTE_MS,
    MINUTE_RETENTION_MS,
    MetricBucket,
    MetricSample,
    NameCounts,
    Resolution,
    StoredAlert,
)
from .plumbing import RedisPlumbing, by_queue
from .records import queue_keys

WIDTHS: dict[str, tuple[int, int]] = {
    "minute": (MINUTE_MS, MINUTE_RETENTION_MS),
    "hour": (HOUR_MS, HOUR_RETENTION_MS),
}
READ_LIMIT = 1440
"""Most buckets one ``metrics_read.lua`` call fetches (24 h of minutes)."""
RECORD_LIMIT = 1000


class _Entry(msgspec.Struct):
    k: int  # index into KEYS (1-based)
    x: int  # ms left to live (relative: the caller's clock, not the server's)
    f: list[Any]  # field, increment, field, increment...


def bucket_key(prefix: str, queue: str, width_ms: int, start_ms: int) -> bytes:
    return f"{queue_keys(prefix, queue).tag}:metrics:{width_ms}:{start_ms}".encode()


def totals_key(prefix: str, queue: str) -> bytes:
    """The queue's lifetime totals hash (no expiry)."""
    return f"{queue_keys(prefix, queue).tag}:metric_totals".encode()


def _per_name(flat: Sequence[bytes]) -> dict[str, dict[str, int]]:
    """A flat ``HGETALL`` reply of ``<job name>|<field>`` -> integer, per job name."""
    out: dict[str, dict[str, int]] = {}
    for n in range(0, len(flat), 2):
        name, _, field = flat[n].decode().rpartition("|")
        out.setdefault(name, {})[field] = int(flat[n + 1])
    return out


class RedisMetrics(RedisPlumbing):
    """Mixin of :class:`~shigoto.backends.redis.RedisBackend`."""

    def _liveness_keys(self) -> tuple[bytes, bytes]:
        tag = f"{{{self.prefix}}}"
        return f"{tag}:workers".encode(), f"{tag}:workers_expiry".encode()

    def _alert_keys(self) -> tuple[bytes, bytes, bytes]:
        tag = f"{{{self.prefix}}}"
        return (
            f"{tag}:alerts".encode(),
            f"{tag}:alert_versions".encode(),
            f"{tag}:alert_history".encode(),
        )

    async def record_metrics(self, samples: Sequence[MetricSample], *, now_ms: int) -> None:
        for queue, indexes in by_queue([s.queue for s in samples]).items():
            buckets: dict[tuple[int, int], dict[str, int]] = {}
            totals: dict[str, int] = {}
            for i in indexes:
                sample = samples[i]
                for field, value in sample.values.items():
                    member = f"{sample.name}|{field}"
                    totals[member] = totals.get(member, 0) + value
                for width, _ in WIDTHS.values():
                    start = sample.minute_ms - sample.minute_ms % width
                    into = buckets.setdefault((width, start), {})
                    for field, value in sample.values.items():
                        member = f"{sample.name}|{field}"
                        into[member] = into.get(member, 0) + value
            keep = {width: retention for width, retention in WIDTHS.values()}
            keys: list[bytes] = []
            entries: list[_Entry] = []
            for (width, start), values in buckets.items():
                if start + width + keep[width] <= now_ms:
                    continue  # already past its retention: it would expire at once
                keys.append(bucket_key(self.prefix, queue, width, start))
                flat: list[Any] = []
                for member, value in values.items():
                    flat += (member, value)
                ttl = start + width + keep[width] - now_ms
                entries.append(_Entry(k=len(keys), x=ttl, f=flat))
            if totals:
                keys.append(totals_key(self.prefix, queue))
                flat = []
                for member, value in totals.items():
                    flat += (member, value)
                entries.append(_Entry(k=len(keys), x=0, f=flat))  # x=0: never expires
            for begin in range(0, len(entries), RECORD_LIMIT):
                part = entries[begin : begin + RECORD_LIMIT]
                part_keys = keys[begin : begin + RECORD_LIMIT]
                renumbered = [_Entry(k=n + 1, x=e.x, f=e.f) for n, e in enumerate(part)]
                await self._run("metrics_record", part_keys, (msgspec.msgpack.encode(renumbered),))

    async def read_metrics(
        self, queue: str, *, resolution: Resolution, since_ms: int, until_ms: int
    ) -> list[MetricBucket]:
        width, retention = WIDTHS[resolution]
        start = max(since_ms, until_ms - retention - width)
        start += -start % width  # first bucket start at or after since_ms
        starts = list(range(start, until_ms, width))[-READ_LIMIT:]
        if not starts:
            return []
        keys = [bucket_key(self.prefix, queue, width, s) for s in starts]
        reply = await self._run("metrics_read", keys, ())
        out: list[MetricBucket] = []
        for bucket_start, flat in zip(starts, reply, strict=True):
            per_name = _per_name(flat)
            for name in sorted(per_name):
                out.append(MetricBucket(name=name, start_ms=bucket_start, values=per_name[name]))
        return out

    async def read_metric_totals(self, queue: str) -> dict[str, dict[str, int]]:
        reply = _as_dict(await self._call("HGETALL", totals_key(self.prefix, queue)))
        return _per_name([item for pair in reply.items() for item in pair])

    async def worker_beat(
        self, worker_id: str, info: bytes, *, expires_ms: int, now_ms: int
    ) -> None:
        await self._run(
            "metrics_worker_beat", self._liveness_keys(), (worker_id, info, expires_ms, now_ms)
        )

    async def worker_gone(self, worker_id: str) -> None:
        await self._run("metrics_worker_gone", self._liveness_keys(), (worker_id,))

    async def list_workers(self, *, now_ms: int, limit: int = 1000) -> list[bytes]:
        reply = await self._run(
            "metrics_list_workers", self._liveness_keys(), (now_ms, min(limit, 1000))
        )
        pairs = sorted((reply[n], reply[n + 1]) for n in range(0, len(reply), 2))
        return [bytes(info) for _, info in pairs]

    async def alert_states(self, *, limit: int = 1000) -> list[StoredAlert]:
        states_key, versions_key, _ = self._alert_keys()
        states = _as_dict(await self._call("HGETALL", states_key))
        versions = _as_dict(await self._call("HGETALL", versions_key))
        out = [
            StoredAlert(key=key.decode(), version=int(versions.get(key, b"0")), state=bytes(state))
            for key, state in states.items()
        ]
        return sorted(out, key=lambda s: s.key)[:limit]

    async def alert_transition(
        self, key: str, state: bytes, *, version: int, note: bytes | None, now_ms: int
    ) -> bool:
        reply = await self._run(
            "metrics_alert_transition",
            self._alert_keys(),
            (key, state, version, note or b"", ALERT_HISTORY),
        )
        return bool(reply == 1)

    async def alert_history(self, *, limit: int = 100) -> list[bytes]:
        _, _, history = self._alert_keys()
        reply: list[bytes] = await self._call("LRANGE", history, 0, max(0, limit - 1))
        return [bytes(item) for item in reply]

    async def counts_by_name(self, queue: str, *, limit: int = 10_000) -> NameCounts:
        keys = queue_keys(self.prefix, queue)
        script_keys = (keys.jobs, keys.wait, keys.delayed, keys.active, keys.dead)
        reply = await self._run("metrics_counts_by_name", script_keys, (max(1, limit),))
        counts: dict[str, dict[JobState, int]] = {}
        for i in range(1, len(reply), 3):
            name = reply[i].decode()
            counts.setdefault(name, {})[JobState(reply[i + 1].decode())] = int(reply[i + 2])
        return NameCounts(counts=counts, complete=bool(reply[0]))


def _as_dict(reply: Any) -> dict[bytes, bytes]:
    """``HGETALL`` as a dict, whether the client parsed it already or not."""
    if isinstance(reply, dict):
        return reply
    items = list(reply or [])
    return dict(zip(items[::2], items[1::2], strict=True))
