"""MetricsRecorder: the worker's in-memory counters, drained once a second."""

from __future__ import annotations

from shigoto.backends.contract import MINUTE_MS
from shigoto.job import JobOptions, JobRecord, JobState
from shigoto.metrics import MetricsRecorder

T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS


def record(name: str = "n", queue: str = "q", ready_ms: int = T0) -> JobRecord:
    return JobRecord(
        id="1", queue=queue, name=name, payload=b"{}", options=JobOptions(),
        state=JobState.ACTIVE, priority=0, created_ms=T0, ready_ms=ready_ms,
    )  # fmt: skip


def test_a_drained_sample_holds_only_the_counters_that_moved() -> None:
    recorder = MetricsRecorder(lambda name: 10)
    recorder.observe(record(), T0 + 3, T0 + 20, "completed")  # waited 3, ran 17: slow
    recorder.observe(record(), T0 + 5, T0 + 5, "retried")  # waited 5, ran 0

    [sample] = recorder.drain()

    assert (sample.queue, sample.name, sample.minute_ms) == ("q", "n", T0)
    assert sample.values == {
        "completed": 1, "retried": 1, "failed": 1, "slow": 1,
        "run_ms": 17, "wait_ms": 8, "run_0": 1, "run_2": 1, "wait_0": 2,
    }  # fmt: skip
    assert recorder.drain() == []


def test_attempts_are_counted_per_queue_name_and_minute() -> None:
    recorder = MetricsRecorder(lambda name: None)
    recorder.observe(record("a"), T0, T0 + 1, "dead")
    recorder.observe(record("b"), T0, T0 + 1, "completed")
    recorder.observe(record("a", queue="other"), T0, T0 + 1, "completed")
    recorder.observe(record("a"), T0 + MINUTE_MS, T0 + MINUTE_MS + 1, "completed")

    samples = {(s.queue, s.name, s.minute_ms): s.values for s in recorder.drain()}

    assert samples[("q", "a", T0)] == {
        "dead": 1, "failed": 1, "run_ms": 1, "run_0": 1, "wait_0": 1,
    }  # fmt: skip
    assert samples[("q", "b", T0)]["completed"] == 1
    assert samples[("other", "a", T0)]["completed"] == 1
    assert samples[("q", "a", T0 + MINUTE_MS)]["wait_ms"] == MINUTE_MS


def test_clock_skew_between_machines_counts_zero_not_negative() -> None:
    recorder = MetricsRecorder(lambda name: None)
    # ready after it started, ended before it started (three clocks)
    recorder.observe(record(ready_ms=T0 + 9), T0 + 5, T0 + 2, "completed")

    [sample] = recorder.drain()
    assert sample.values == {"completed": 1, "run_0": 1, "wait_0": 1}


def test_restored_samples_merge_with_newer_counts() -> None:
    recorder = MetricsRecorder(lambda name: None)
    recorder.observe(record(), T0, T0 + 1, "completed")
    failed_flush = recorder.drain()
    recorder.observe(record(), T0, T0 + 1, "completed")

    recorder.restore(failed_flush)

    [sample] = recorder.drain()
    assert sample.values == {"completed": 2, "run_ms": 2, "run_0": 2, "wait_0": 2}


def test_a_batch_of_completions_counts_as_the_same_attempts_observed_one_by_one() -> None:
    # the batch call finds a cell once per run of alike jobs: every change of queue,
    # name or minute (forwards and back) must still land in its own cell
    attempts = [
        (record("a"), T0, T0 + 1),
        (record("a"), T0 + 2, T0 + 40),
        (record("b"), T0, T0 + 3),
        (record("a", queue="other"), T0, T0 + 1),
        (record("a"), T0 + MINUTE_MS, T0 + MINUTE_MS + 2),
        (record("a"), T0 + 5, T0 + 6),  # back to the first minute
    ]
    one_by_one, batched = MetricsRecorder(lambda name: 10), MetricsRecorder(lambda name: 10)
    for job, started_ms, ended_ms in attempts:
        one_by_one.observe(job, started_ms, ended_ms, "completed")

    batched.completed(iter(attempts))

    def by_key(recorder: MetricsRecorder) -> dict[tuple[str, str, int], dict[str, int]]:
        return {(s.queue, s.name, s.minute_ms): s.values for s in recorder.drain()}

    expected = by_key(one_by_one)
    assert len(expected) == 4
    assert expected[("q", "a", T0)]["completed"] == 3
    assert by_key(batched) == expected
