"""The SQLite ``metrics_v2`` migration: lifetime totals seeded from the hour buckets a
database already holds, so upgrading does not reset the exported counters (issue 6)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from shigoto.backends import open_backend
from shigoto.backends.contract import HOUR_MS, MINUTE_MS
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
