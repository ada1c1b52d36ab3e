"""The heartbeat thread survives a backend that is down when the worker starts."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import pytest

from shigoto.backends.contract import Lease, LeaseStatus
from shigoto.clock import SystemClock
from shigoto.heartbeat import Heartbeat


class FlakyBackend:
    """Refuses to connect ``failures`` times, then renews every lease it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.extended: list[str] = []

    async def connect(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("connection refused")

    async def close(self) -> None:
        pass

    async def extend(
        self, leases: Sequence[Lease], *, lease_ms: int, now_ms: int
    ) -> list[LeaseStatus]:
        self.extended.extend(lease.job_id for lease in leases)
        return [LeaseStatus(lease.job_id, held=True) for lease in leases]


def test_leases_are_renewed_once_the_backend_comes_back_and_the_outage_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = FlakyBackend(failures=3)
    beat = Heartbeat(
        lambda: backend,  # type: ignore[arg-type, return-value]
        SystemClock(),
        lease_ms=1_000,
        interval_s=0.02,
        on_status=lambda statuses: None,
    )
    beat.track(Lease("email", "job-1", "token"), timeout_s=None)
    with caplog.at_level(logging.WARNING, logger="shigoto.heartbeat"):
        beat.start()
        deadline = time.monotonic() + 5
        while not backend.extended and time.monotonic() < deadline:
            time.sleep(0.01)
        beat.stop()

    assert backend.extended and backend.extended[0] == "job-1"
    failures = [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert len(failures) == 1
    assert any("reachable again" in r.getMessage() for r in caplog.records)
