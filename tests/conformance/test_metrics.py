"""Metrics: counters add up per bucket, storage is bounded, beats expire, alert
transitions are compare-and-set (one evaluator wins each)."""

from __future__ import annotations

import asyncio

import pytest

from shigoto.backends import Backend
from shigoto.backends.contract import (
    HOUR_MS,
    HOUR_RETENTION_MS,
    MINUTE_MS,
    MINUTE_RETENTION_MS,
    MetricSample,
)
from shigoto.job import JobState

from .support import T0, attempt_error, claim, enqueue, lease_of, new_job, storage_name

MINUTE0 = T0 - T0 % HOUR_MS  # an hour boundary, so minute and hour buckets line up


@pytest.fixture
def metrics(backend: Backend) -> Backend:
    if not hasattr(backend, "record_metrics"):
        pytest.skip(f"metrics not implemented on {backend.capabilities.name} yet")
    return backend


def sample(queue: str, minute_ms: int, name: str = "task", **values: int) -> MetricSample:
    return MetricSample(queue=queue, name=name, minute_ms=minute_ms, values=values)


async def test_samples_add_up_per_minute_and_per_hour(metrics: Backend, queue_name: str) -> None:
    await metrics.record_metrics(
        [
            sample(queue_name, MINUTE0, completed=3, run_ms=30),
            sample(queue_name, MINUTE0, name="other", failed=1),
        ],
        now_ms=MINUTE0,
    )
    await metrics.record_metrics(
        [
            sample(queue_name, MINUTE0, completed=2, run_ms=5),
            sample(queue_name, MINUTE0 + MINUTE_MS, completed=1),
        ],
        now_ms=MINUTE0 + MINUTE_MS,
    )
    minutes = await metrics.read_metrics(
        queue_name, resolution="minute", since_ms=MINUTE0, until_ms=MINUTE0 + 2 * MINUTE_MS
    )
    assert [(b.start_ms, b.name, b.values) for b in minutes] == [
        (MINUTE0, "other", {"failed": 1}),
        (MINUTE0, "task", {"completed": 5, "run_ms": 35}),
        (MINUTE0 + MINUTE_MS, "task", {"completed": 1}),
    ]
    hours = await metrics.read_metrics(
        queue_name, resolution="hour", since_ms=MINUTE0, until_ms=MINUTE0 + HOUR_MS
    )
    assert [(b.start_ms, b.name, b.values) for b in hours] == [
        (MINUTE0, "other", {"failed": 1}),
        (MINUTE0, "task", {"completed": 6, "run_ms": 35}),
    ]


async def test_reads_are_per_queue_and_ranged(metrics: Backend, queue_name: str) -> None:
    other = queue_name + "-b"
    await metrics.record_metrics(
        [sample(queue_name, MINUTE0, completed=1), sample(other, MINUTE0, completed=7)],
        now_ms=MINUTE0,
    )
    mine = await metrics.read_metrics(
        queue_name, resolution="minute", since_ms=MINUTE0, until_ms=MINUTE0 + MINUTE_MS
    )
    assert [b.values for b in mine] == [{"completed": 1}]
    later = await metrics.read_metrics(
        queue_name,
        resolution="minute",
        since_ms=MINUTE0 + MINUTE_MS,
        until_ms=MINUTE0 + 5 * MINUTE_MS,
    )
    assert later == []


async def test_old_buckets_are_pruned(metrics: Backend, queue_name: str) -> None:
    """Storage is bounded: minute buckets go after 24 h, hour buckets after 30 days."""
    await metrics.record_metrics([sample(queue_name, MINUTE0, completed=1)], now_ms=MINUTE0)
    later = MINUTE0 + MINUTE_RETENTION_MS + 2 * HOUR_MS
    await metrics.record_metrics([sample(queue_name, later - later % MINUTE_MS, completed=2)],
                                 now_ms=later)  # fmt: skip
    if storage_name(metrics).startswith("redis"):
        # Redis expires buckets by TTL on its own clock; check the TTL instead.
        return
    old = await metrics.read_metrics(
        queue_name, resolution="minute", since_ms=MINUTE0, until_ms=MINUTE0 + MINUTE_MS
    )
    assert old == []
    hours = await metrics.read_metrics(
        queue_name, resolution="hour", since_ms=MINUTE0, until_ms=MINUTE0 + HOUR_MS
    )
    assert [b.values for b in hours] == [{"completed": 1}]
    much_later = MINUTE0 + HOUR_RETENTION_MS + 2 * HOUR_MS
    await metrics.record_metrics(
        [sample(queue_name, much_later - much_later % MINUTE_MS, completed=1)], now_ms=much_later
    )
    hours = await metrics.read_metrics(
        queue_name, resolution="hour", since_ms=MINUTE0, until_ms=MINUTE0 + HOUR_MS
    )
    assert hours == []


async def test_concurrent_flushes_lose_no_increment(metrics: Backend, queue_name: str) -> None:
    await asyncio.gather(
        *(
            metrics.record_metrics([sample(queue_name, MINUTE0, completed=1)], now_ms=MINUTE0)
            for _ in range(20)
        )
    )
    [bucket] = await metrics.read_metrics(
        queue_name, resolution="minute", since_ms=MINUTE0, until_ms=MINUTE0 + MINUTE_MS
    )
    assert bucket.values == {"completed": 20}


async def test_worker_beats_expire_and_can_be_removed(metrics: Backend, queue_name: str) -> None:
    a, b = f"{queue_name}-w1", f"{queue_name}-w2"
    await metrics.worker_beat(a, b"info-a", expires_ms=T0 + 30_000, now_ms=T0)
    await metrics.worker_beat(b, b"info-b", expires_ms=T0 + 10_000, now_ms=T0)
    assert await metrics.list_workers(now_ms=T0) == [b"info-a", b"info-b"]
    await metrics.worker_beat(a, b"info-a2", expires_ms=T0 + 60_000, now_ms=T0 + 20_000)
    assert await metrics.list_workers(now_ms=T0 + 20_000) == [b"info-a2"]
    await metrics.worker_gone(a)
    assert await metrics.list_workers(now_ms=T0 + 20_000) == []


async def test_alert_transition_is_compare_and_set(metrics: Backend, queue_name: str) -> None:
    key = f"backlog@{queue_name}"
    assert await metrics.alert_transition(key, b"pending", version=0, note=b"n1", now_ms=T0)
    # A second evaluator that read the same (absent) state loses.
    assert not await metrics.alert_transition(key, b"pending", version=0, note=b"n1", now_ms=T0)
    assert await metrics.alert_transition(key, b"firing", version=1, note=b"n2", now_ms=T0 + 1)
    assert await metrics.alert_transition(key, b"firing+", version=2, note=None, now_ms=T0 + 2)
    states = [s for s in await metrics.alert_states() if s.key == key]
    assert [(s.version, s.state) for s in states] == [(3, b"firing+")]
    history = await metrics.alert_history(limit=10)
    assert history[:2] == [b"n2", b"n1"]


async def test_concurrent_evaluators_win_a_transition_once(
    metrics: Backend, queue_name: str
) -> None:
    key = f"failure_rate@{queue_name}"
    wins = await asyncio.gather(
        *(
            metrics.alert_transition(key, b"firing", version=0, note=b"x", now_ms=T0)
            for _ in range(10)
        )
    )
    assert sum(wins) == 1


async def _jobs_in_four_states(backend: Backend, queue: str) -> None:
    # dead: a x2, b x1 (enqueued, claimed and dead-lettered first)
    await enqueue(backend, *(new_job(queue, name=n) for n in ("a", "a", "b")))
    for claimed in await claim(backend, queue, limit=3):
        await backend.dead_letter(
            lease_of(claimed), reason="failed", error=attempt_error(), now_ms=T0
        )
    # active: a x1, b x2
    await enqueue(backend, *(new_job(queue, name=n) for n in ("a", "b", "b")))
    assert len(await claim(backend, queue, limit=3)) == 3
    # waiting: a x3, b x1; delayed: a x1, b x2
    await enqueue(backend, *(new_job(queue, name=n) for n in ("a", "a", "a", "b")))
    await enqueue(backend, *(new_job(queue, name=n, delay_ms=60_000) for n in ("a", "b", "b")))


async def test_counts_by_name_are_exact_per_name_and_state(
    metrics: Backend, queue_name: str
) -> None:
    await _jobs_in_four_states(metrics, queue_name)
    found = await metrics.counts_by_name(queue_name)
    assert found.complete is True
    assert found.counts == {
        "a": {JobState.DEAD: 2, JobState.ACTIVE: 1, JobState.WAITING: 3, JobState.DELAYED: 1},
        "b": {JobState.DEAD: 1, JobState.ACTIVE: 2, JobState.WAITING: 1, JobState.DELAYED: 2},
    }
    assert (await metrics.counts_by_name(queue_name + "-empty")).counts == {}


async def test_counts_by_name_reports_incomplete_past_the_limit(
    metrics: Backend, queue_name: str
) -> None:
    await _jobs_in_four_states(metrics, queue_name)
    found = await metrics.counts_by_name(queue_name, limit=3)
    assert found.complete is False  # waiting holds 4
    assert sum(per.get(JobState.WAITING, 0) for per in found.counts.values()) == 3
    # States within the limit (3 jobs each) are still counted exactly, name by name.
    for state, expected in (
        (JobState.ACTIVE, {"a": 1, "b": 2}),
        (JobState.DELAYED, {"a": 1, "b": 2}),
        (JobState.DEAD, {"a": 2, "b": 1}),
    ):
        assert {name: per.get(state) for name, per in found.counts.items()} == expected
    assert (await metrics.counts_by_name(queue_name, limit=4)).complete is True


# -- lifetime totals (monotonic counters) ------------------------------------------------


async def test_totals_add_every_sample_for_the_lifetime_of_the_queue(
    metrics: Backend, queue_name: str
) -> None:
    """What the Prometheus counters are built on: every recorded value, per job name."""
    assert await metrics.read_metric_totals(queue_name) == {}
    await metrics.record_metrics(
        [
            sample(queue_name, MINUTE0, completed=3, run_ms=30),
            sample(queue_name, MINUTE0, name="other", failed=1, dead=1),
            sample(queue_name + "-b", MINUTE0, completed=7),
        ],
        now_ms=MINUTE0,
    )
    later = MINUTE0 + 2 * HOUR_MS + 5 * MINUTE_MS  # another hour bucket
    await metrics.record_metrics(
        [sample(queue_name, MINUTE0 + MINUTE_MS, completed=1), sample(queue_name, later, slow=2)],
        now_ms=later,
    )
    assert await metrics.read_metric_totals(queue_name) == {
        "other": {"failed": 1, "dead": 1},
        "task": {"completed": 4, "run_ms": 30, "slow": 2},
    }
    assert await metrics.read_metric_totals(queue_name + "-b") == {"task": {"completed": 7}}


async def test_totals_never_go_down_when_old_buckets_are_pruned(
    metrics: Backend, queue_name: str
) -> None:
    """A counter summed from the 30 days of hour buckets would drop when the oldest
    hour goes; the totals keep it (issue 6)."""
    await metrics.record_metrics([sample(queue_name, MINUTE0, completed=5)], now_ms=MINUTE0)
    seen = [(await metrics.read_metric_totals(queue_name))["task"]["completed"]]
    for step in (MINUTE_RETENTION_MS, HOUR_RETENTION_MS, 2 * HOUR_RETENTION_MS):
        now = MINUTE0 + step + 2 * HOUR_MS
        await metrics.record_metrics(
            [sample(queue_name, now - now % MINUTE_MS, completed=1)], now_ms=now
        )
        seen.append((await metrics.read_metric_totals(queue_name))["task"]["completed"])
    assert seen == [5, 6, 7, 8]
    if not storage_name(metrics).startswith("redis"):  # Redis prunes by TTL instead
        first_hour = await metrics.read_metrics(
            queue_name, resolution="hour", since_ms=MINUTE0, until_ms=MINUTE0 + HOUR_MS
        )
        assert first_hour == []  # pruned, yet still counted in the totals


async def test_a_sample_already_past_its_retention_still_counts_in_the_totals(
    metrics: Backend, queue_name: str
) -> None:
    """A worker that flushes very late (backend down for days) loses its buckets but
    not its counts."""
    now = MINUTE0 + HOUR_RETENTION_MS + 3 * HOUR_MS
    await metrics.record_metrics([sample(queue_name, MINUTE0, completed=2)], now_ms=now)
    assert await metrics.read_metric_totals(queue_name) == {"task": {"completed": 2}}


async def test_concurrent_flushes_lose_no_total(metrics: Backend, queue_name: str) -> None:
    await asyncio.gather(
        *(
            metrics.record_metrics(
                [
                    sample(queue_name, MINUTE0, completed=1),
                    sample(queue_name, MINUTE0, "b", dead=2),
                ],
                now_ms=MINUTE0,
            )
            for _ in range(20)
        )
    )
    assert await metrics.read_metric_totals(queue_name) == {
        "b": {"dead": 40},
        "task": {"completed": 20},
    }
