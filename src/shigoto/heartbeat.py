"""Lease heartbeats from a thread user code cannot block.

An async handler that blocks the event loop (CPU work, a sync HTTP call) would starve
heartbeats sent from that loop, and its lease would expire while it still runs — the
"Missing lock" failure BullMQ users know. So leases are renewed by this thread, with its
own event loop and its own backend connection. It stops renewing a job once the job's
timeout is well past (a handler hung in a blocked loop then loses its lease and the job
is recovered elsewhere) and reports leases lost or cancellations back to the worker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import eventloop
from .backends.contract import Backend, Lease, LeaseStatus
from .clock import Clock

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Tracked:
    lease: Lease
    give_up_at: float | None  # time.monotonic() after which the lease is left to expire


class Heartbeat:
    def __init__(
        self,
        open_backend: Callable[[], Backend],
        clock: Clock,
        *,
        lease_ms: int,
        interval_s: float,
        on_status: Callable[[list[tuple[Lease, LeaseStatus]]], None],
    ) -> None:
        self._open_backend = open_backend
        self._clock = clock
        self._lease_ms = lease_ms
        self._interval_s = interval_s
        self._on_status = on_status
        self._tracked: dict[str, _Tracked] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_beat: float = 0.0
        self._failing = False

    def track(self, lease: Lease, timeout_s: float | None) -> None:
        self.track_many([(lease, timeout_s)])

    def track_many(self, items: Iterable[tuple[Lease, float | None]]) -> None:
        """Start renewing each lease (``timeout_s``: its job's timeout). One lock for a
        whole claimed batch: the worker calls this once per claim, not once per job."""
        now = time.monotonic()
        slack = 2 * self._interval_s
        with self._lock:
            tracked = self._tracked
            for lease, timeout_s in items:
                give_up = None if timeout_s is None else now + timeout_s + slack
                tracked[lease.job_id] = _Tracked(lease, give_up)

    def untrack(self, lease: Lease) -> None:
        """Stop renewing ``lease`` (not a newer claim of the same job, if one is tracked)."""
        self.untrack_many((lease,))

    def untrack_many(self, leases: Iterable[Lease]) -> None:
        """:meth:`untrack` for many leases under one lock (a batch of acknowledgements)."""
        with self._lock:
            tracked = self._tracked
            for lease in leases:
                entry = tracked.get(lease.job_id)
                if entry is not None and entry.lease == lease:
                    del tracked[lease.job_id]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shigoto-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        loop = eventloop.new_event_loop()  # uvloop when installed
        backend = self._open_backend()
        try:
            while not self._stop.wait(self._interval_s):
                self._beat(loop, backend)
        except Exception:
            log.exception("heartbeat thread stopped; leases will expire and jobs be recovered")
        finally:
            try:
                loop.run_until_complete(backend.close())
            finally:
                loop.close()

    def _beat(self, loop: asyncio.AbstractEventLoop, backend: Backend) -> None:
        now = time.monotonic()
        with self._lock:
            leases = [
                t.lease
                for t in self._tracked.values()
                if t.give_up_at is None or now < t.give_up_at
            ]
        if not leases:
            self.last_beat = now
            return
        try:
            # connect() is idempotent: it also (re)connects after a failed start
            loop.run_until_complete(backend.connect())
            statuses = loop.run_until_complete(
                backend.extend(leases, lease_ms=self._lease_ms, now_ms=self._clock.now_ms())
            )
        except Exception as exc:  # backend down: try again next beat, lease may still hold
            if not self._failing:  # once per outage, not once per beat
                log.warning(
                    "heartbeat failed (%s: %s); retrying every %.1f s",
                    type(exc).__name__,
                    exc,
                    self._interval_s,
                )
            self._failing = True
            return
        if self._failing:
            log.warning("heartbeat: backend reachable again, leases renewed")
            self._failing = False
        self.last_beat = now
        # paired with the lease asked about, so an answer about an older claim of a job
        # is never applied to a newer claim of it
        notable = [
            (lease, s)
            for lease, s in zip(leases, statuses, strict=True)
            if not s.held or s.cancel_requested
        ]
        if notable:
            self._on_status(notable)
