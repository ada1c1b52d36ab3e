"""Rate limits and concurrency caps on Redis (issue 11): the settings and ``postpone``.

The limits live in the queue's ``limits`` hash (under the queue's hash tag, like every
key of the queue) and are enforced by ``claim.lua`` in the same script run that pops
the jobs, so concurrent workers can never exceed them together. ``postpone.lua`` is the
transition for :class:`~shigoto.errors.RateLimited`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..contract import Lease, QueueLimits
from .records import queue_keys

_FIELDS = ("rm", "rp", "ma", "gm", "gp", "hu")


def _arg(value: int | None) -> str:
    return "" if value is None else str(value)


class RedisRateLimits:
    """The ``rate limits`` section of the contract for :class:`RedisBackend`."""

    prefix: str
    _due_at: dict[str, float]
    _held_at: dict[str, float]
    _capped: set[str]
    _freed: asyncio.Event

    if TYPE_CHECKING:

        async def _run(
            self,
            name: str,
            keys: Sequence[bytes],
            args: Sequence[Any],
            *,
            job_id: str | None = None,
        ) -> Any: ...

        async def _call(self, *command: Any) -> Any: ...

        async def _register(self, queue: str) -> None: ...

    def _slot_freed(self, queue: str) -> None:
        """A job of ``queue`` left ``active`` through this connection: wake the waits
        held by the queue's ``max_active`` at once instead of at their next poll."""
        if queue in self._capped:
            self._freed.set()

    def outlook(self, queues: Sequence[str]) -> tuple[list[str], float | None]:
        """:class:`~shigoto.backends.contract.LimitOutlook`, from the last claims' replies."""
        now = asyncio.get_running_loop().time()
        held = [queue for queue in queues if self._held_at.get(queue, now) > now]
        dues = [self._due_at[queue] - now for queue in queues if queue in self._due_at]
        return held, max(0.0, min(dues)) if dues else None

    async def set_limits(self, queue: str, limits: QueueLimits) -> None:
        keys = queue_keys(self.prefix, queue)
        await self._register(queue)
        await self._run(
            "set_limits",
            (keys.limits, keys.marker),
            (
                _arg(limits.rate_max),
                _arg(limits.rate_period_ms),
                _arg(limits.max_active),
                _arg(limits.group_rate_max),
                _arg(limits.group_rate_period_ms),
            ),
        )

    async def get_limits(self, queue: str, *, now_ms: int) -> QueueLimits:
        raw = await self._call("HMGET", queue_keys(self.prefix, queue).limits, *_FIELDS)
        rm, rp, ma, gm, gp, hu = (None if v is None else int(v) for v in raw)
        return QueueLimits(
            rate_max=rm,
            rate_period_ms=rp,
            max_active=ma,
            group_rate_max=gm,
            group_rate_period_ms=gp,
            held_until_ms=hu if hu is not None and hu > now_ms else None,
        )

    async def postpone(self, lease: Lease, *, run_at_ms: int, hold: bool, now_ms: int) -> None:
        keys = queue_keys(self.prefix, lease.queue)
        await self._run(
            "postpone",
            (
                keys.wait,
                keys.delayed,
                keys.active,
                keys.jobs,
                keys.marker,
                keys.cancelled,
                keys.limits,
            ),
            (lease.job_id, lease.token, run_at_ms, now_ms, "1" if hold else "0"),
            job_id=lease.job_id,
        )
        self._slot_freed(lease.queue)
