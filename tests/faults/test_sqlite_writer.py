"""The SQLite "backend restart": the process writing the file is killed mid-write.

A producer adds jobs in bulk (chunks of 1,000, one transaction each) and is SIGKILLed
part-way; then worker processes are killed while they commit. The file must pass
``PRAGMA integrity_check``, hold only whole chunks (no half-written transaction), and
every job in it must still end completed, with the accounting of ``_accounting``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from shigoto import App

from ._procs import Cluster, all_records, make_cluster, settle_and_check, wait_for_rows
from .worker_proc import QUEUE

PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    from shigoto import App

    async def main():
        app = App(sys.argv[1])
        items = ({"name": "effect", "data": {"n": n}} for n in range(200_000))
        print("ready", flush=True)
        await app.queue(sys.argv[2]).add_bulk(items, return_jobs=False)

    asyncio.run(main())
    """
)


async def test_killing_the_writers_of_the_sqlite_file_loses_no_job(tmp_path: Path) -> None:
    cluster: Cluster = make_cluster(tmp_path)
    db = tmp_path / "jobs.db"
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, cluster.url, QUEUE], stdout=subprocess.PIPE
    )
    assert producer.stdout is not None and producer.stdout.readline().strip() == b"ready"

    def stored() -> int:
        if not db.exists():
            return 0
        conn = sqlite3.connect(db, timeout=30)
        try:
            return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # not migrated yet
        finally:
            conn.close()

    while await asyncio.to_thread(stored) < 3000:
        assert producer.poll() is None, "the producer finished before it could be killed"
        await asyncio.sleep(0.02)
    producer.kill()  # SIGKILL mid add_bulk: a chunk's transaction may be open
    producer.wait(10)

    conn = sqlite3.connect(db, timeout=30)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        total = int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
    finally:
        conn.close()
    assert total % 1000 == 0, f"{total} jobs: a chunk was half written"

    app = App(cluster.url)
    try:
        ids = list(await all_records(app))
        assert len(ids) == total
        fast = {"concurrency": 8, "lease": 1.0, "stall_check": 0.2}
        first = cluster.spawn(**fast)
        await wait_for_rows(cluster.effects, total // 3, timeout=60)
        await asyncio.to_thread(first.kill)  # a worker killed while it commits
        cluster.spawn(**fast)
        report = await settle_and_check(app, cluster, ids, faulted=[f"proc-{first.pid}"])
    finally:
        await app.close()
        await asyncio.to_thread(cluster.stop_all)
    print(f"sqlite writers killed: {total} jobs stored by the killed producer; {report}")
    assert report.completed == total, report
