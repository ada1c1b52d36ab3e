"""The idempotency section of the contract on Redis.

* **Dedup keys** (``NewJob.dedup_key``) are checked and taken inside ``enqueue.lua``
  (``lua/includes/store.lua``), so check-and-take is one atomic step with the store.
* **Once-records** (``ctx.once``) live in the queue's ``once`` hash with an expiry index
  ``once_exp``; each call is one script that reaps a bounded number of expired records.
"""

from __future__ import annotations

from ..contract import OnceClaim
from .plumbing import RedisPlumbing
from .records import queue_keys


class RedisIdempotency(RedisPlumbing):
    """Mixin of :class:`~shigoto.backends.redis.RedisBackend`."""

    async def once_claim(
        self, queue: str, key: str, *, owner: str, lease_ms: int, now_ms: int
    ) -> OnceClaim:
        keys = queue_keys(self.prefix, queue)
        reply = await self._run(
            "once_claim", (keys.once, keys.once_exp), (key, owner, lease_ms, now_ms)
        )
        status = reply[0].decode()
        if status == "done":
            return OnceClaim("done", result=reply[1] if len(reply) > 1 else None)
        if status == "busy":
            return OnceClaim("busy", holder=reply[2].decode(), until_ms=int(reply[3]))
        return OnceClaim("claimed")

    async def once_mark(
        self,
        queue: str,
        key: str,
        *,
        owner: str,
        result: bytes | None,
        ttl_ms: int | None,
        now_ms: int,
    ) -> bool:
        keys = queue_keys(self.prefix, queue)
        held = await self._run(
            "once_mark",
            (keys.once, keys.once_exp),
            (
                key,
                owner,
                now_ms,
                "0" if result is None else "1",
                result or b"",
                "" if ttl_ms is None else ttl_ms,
            ),
        )
        return bool(held)

    async def once_release(self, queue: str, key: str, *, owner: str) -> bool:
        keys = queue_keys(self.prefix, queue)
        return bool(await self._run("once_release", (keys.once, keys.once_exp), (key, owner)))
