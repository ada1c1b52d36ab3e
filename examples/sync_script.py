"""A plain script with the sync API: enqueue, run a worker until the queue is empty,
read the results. ``python examples/sync_script.py``"""

from __future__ import annotations

import tempfile

from shigoto import App, SyncJobContext
from shigoto.testing import run_until_empty_sync


def main(url: str) -> list[int]:
    app = App(url)

    @app.job
    def square(ctx: SyncJobContext, n: int) -> int:
        return n * n

    jobs = [square.enqueue_sync(n) for n in range(5)]
    jobs.append(app.queue().add_sync("square", {"n": 10}))  # the untyped way, by name
    app.close_sync()  # the producer side is done

    worker = run_until_empty_sync(app)  # its own event loop; returns when empty
    print(f"worker ran {worker.processed} jobs")
    results = [job.wait_until_finished_sync(timeout=5) for job in jobs]
    app.close_sync()
    return results


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(main(f"sqlite:///{tmp}/jobs.db"))
