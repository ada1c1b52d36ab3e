"""Operator actions on one job on Redis: remove and promote (issue 7).

A mixin of :class:`~shigoto.backends.redis.RedisBackend`; each action is one script
(``lua/remove.lua``, ``lua/promote.lua``) on the queue's slot, so it is atomic against
claims and every other transition of the queue.
"""

from __future__ import annotations

from .plumbing import RedisPlumbing
from .records import queue_keys


class RedisJobAdmin(RedisPlumbing):
    """Mixin of :class:`~shigoto.backends.redis.RedisBackend`."""

    async def remove(self, queue: str, job_id: str, *, now_ms: int) -> bool:
        keys = queue_keys(self.prefix, queue)
        script_keys = (
            keys.wait,
            keys.delayed,
            keys.completed,
            keys.dead,
            keys.cancelled,
            keys.jobs,
            keys.data,
            keys.errors,
            keys.progress,
            keys.result,
        )
        return bool(await self._run("remove", script_keys, (job_id, now_ms)) == 1)

    async def promote(self, queue: str, job_id: str, *, now_ms: int) -> bool:
        keys = queue_keys(self.prefix, queue)
        script_keys = (keys.delayed, keys.wait, keys.jobs, keys.marker)
        return bool(await self._run("promote", script_keys, (job_id, now_ms)) == 1)
