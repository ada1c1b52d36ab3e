"""Clock skew: a worker whose clock runs 5 s ahead must not steal the leases of
healthy workers.

The assumption (documented in ``shigoto.clock`` and docs/faults.md): worker clocks agree
within a small fraction of the lease (NTP keeps them within milliseconds; the default
lease is 30 s). A worker ``skew`` seconds ahead sees a healthy lease expire ``skew``
seconds early; since heartbeats renew a lease every third of its length, a lease is
never closer than ``2/3 × lease`` to expiry, so any skew below that (20 s for 30 s) is
harmless. Past it, a lease would be taken over — and fencing would still refuse the
first worker's completion, at the price of a second run.
"""

from __future__ import annotations

import pytest

from shigoto import App, JobState

from ._procs import Cluster, enqueue_effects, settle_and_check, wait_for_rows


@pytest.mark.parametrize("skewed_first", [False, True], ids=["healthy-holds", "skewed-holds"])
async def test_a_worker_5_s_ahead_steals_no_lease(
    cluster: Cluster, app: App, skewed_first: bool
) -> None:
    ids = await enqueue_effects(app, 12, sleep=6.0)  # longer than the skew
    healthy = {"concurrency": 6, "stall_check": 0.2}  # default 30 s lease
    skewed = {"concurrency": 6, "stall_check": 0.2, "clock_offset": 5.0}
    first = cluster.spawn(**(skewed if skewed_first else healthy))
    await wait_for_rows(cluster.effects, 6, timeout=30)
    second = cluster.spawn(**(healthy if skewed_first else skewed))
    report = await settle_and_check(app, cluster, ids, timeout=60)
    print(f"clock skew +5 s ({'skewed' if skewed_first else 'healthy'} worker first): {report}")
    assert report.completed == 12 and report.duplicated == 0, report
    records = await app.queue("faults").jobs(JobState.COMPLETED)
    assert all(r.stalls == 0 and not r.errors for r in records)
    assert first.alive() and second.alive()
