"""The SQLite ``metrics_v2`` / ``metrics_v3`` migrations: lifetime totals seeded from the
hour buckets a database already holds, so upgrading does not reset the exported
counters (issue 6), then kept as one JSON row per job name."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from shigoto.backends import open_backend
from shigoto.backends.contract import HOUR_MS, MINUTE_MS, MetricSample
from shigoto.backends.sqlite.backend import MIGRATIONS

T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS


async def test_upgrading_seeds_the_totals_from_the_hour_buckets(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    backend = open_backend(f"sqlite:///{path}")
    await backend.connect()
    await backend.close()
    # Make it a database from before metrics_v2, holding buckets of two hours.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE metric_totals")
    conn.execute(f"PRAGMA user_version = {MIGRATIONS.index('metrics_v2')}")
    rows = [
        ("q", HOUR_MS, T0, "a", {"completed": 3, "run_2": 3}),
        ("q", HOUR_MS, T0 + HOUR_MS, "a", {"completed": 1, "failed": 2}),
        ("q", HOUR_MS, T0, "b", {"dead": 1}),
        ("q", MINUTE_MS, T0, "a", {"completed": 3, "run_2": 3}),  # also in the hour: not again
        ("other", HOUR_MS, T0, "a", {"completed": 9}),
    ]
    conn.executemany(
        "INSERT INTO metric_buckets (queue, resolution, start_ms, name, vals) VALUES (?,?,?,?,?)",
        [(*row[:4], msgspec.json.encode(row[4])) for row in rows],
    )
    conn.close()

    backend = open_backend(f"sqlite:///{path}")
    await backend.connect()
    try:
        assert await backend.read_metric_totals("q") == {
            "a": {"completed": 4, "failed": 2, "run_2": 3},
            "b": {"dead": 1},
        }
        assert await backend.read_metric_totals("other") == {"a": {"completed": 9}}
    finally:
        await backend.close()


async def test_per_field_totals_of_metrics_v2_carry_over_to_one_row_per_name(
    tmp_path: Path,
) -> None:
    """``metrics_v3`` folds the per-field rows of ``metrics_v2`` into one JSON object
    per (queue, job name): no count is lost or doubled on the way."""
    path = tmp_path / "v2.db"
    backend = open_backend(f"sqlite:///{path}")
    await backend.connect()
    await backend.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE metric_totals")
    conn.execute(
        "CREATE TABLE metric_totals (queue TEXT NOT NULL, name TEXT NOT NULL, field TEXT NOT"
        " NULL, value INTEGER NOT NULL, PRIMARY KEY (queue, name, field)) WITHOUT ROWID"
    )
    conn.executemany(
        "INSERT INTO metric_totals VALUES (?, ?, ?, ?)",
        [("q", "a", "completed", 7), ("q", "a", "run_ms", 70), ("q", "b", "dead", 2)],
    )
    conn.execute(f"PRAGMA user_version = {MIGRATIONS.index('metrics_v3')}")
    conn.close()

    backend = open_backend(f"sqlite:///{path}")
    await backend.connect()
    try:
        assert await backend.read_metric_totals("q") == {
            "a": {"completed": 7, "run_ms": 70},
            "b": {"dead": 2},
        }
        minute = T0 - T0 % MINUTE_MS
        await backend.record_metrics(
            [MetricSample("q", "a", minute, {"completed": 1})], now_ms=minute
        )
        assert (await backend.read_metric_totals("q"))["a"] == {"completed": 8, "run_ms": 70}
    finally:
        await backend.close()
